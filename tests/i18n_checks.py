"""What tests/test_i18n.py looks for: a small PO reader (no polib), text left outside the
translation tags of our templates, and literal English passed to the places that show it
(messages, command output, errors, admin labels) in our Python code."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.template.base import Lexer, TokenType

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "instances", "proxy", "iflow2api_site", "desktop")
# First-party packages without a catalogue of their own: copied with the apps for makemessages.
LIBRARIES = ("iflow2api_lib", "upstream")
LANGUAGE = "zh_Hans"
# makemessages: everything outside the packages is left out (tests, scripts, bench, …).
MAKEMESSAGES_IGNORE = ("tests", "scripts", "bench", "node_modules", "docker", "build", "dist",
                       "*.egg-info")


def catalogues(root: Path = ROOT) -> list[Path]:
    return [root / app / "locale" / LANGUAGE / "LC_MESSAGES" / "django.po" for app in APPS]


# ------------------------------------------------------------------------------ PO files


@dataclass
class Entry:
    msgid: str = ""
    plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False


def _unquote(text: str) -> str:
    return ast.literal_eval(text)


def read_po(text: str) -> list[Entry]:
    entries: list[Entry] = []
    entry, target = Entry(), None
    for raw in [*text.splitlines(), ""]:
        line = raw.strip()
        if line.startswith("#~"):
            entry.obsolete = True
            continue
        starts_entry = not line or (line.startswith("#") and entry.msgstr)
        if starts_entry and (entry.msgid or entry.msgstr):
            entries.append(entry)
            entry, target = Entry(), None
        if line.startswith("#,"):
            entry.flags.update(f.strip() for f in line[2:].split(","))
        elif match := re.match(r'(msgid_plural|msgid|msgstr(?:\[(\d+)\])?) (".*")$', line):
            kind, value = match.group(1), _unquote(match.group(3))
            if kind == "msgid":
                entry.msgid, target = value, ("msgid", 0)
            elif kind == "msgid_plural":
                entry.plural, target = value, ("plural", 0)
            else:
                index = int(match.group(2) or 0)
                entry.msgstr[index], target = value, ("msgstr", index)
        elif line.startswith('"') and target is not None:
            value = _unquote(line)
            if target[0] == "msgid":
                entry.msgid += value
            elif target[0] == "plural":
                entry.plural = (entry.plural or "") + value
            else:
                entry.msgstr[target[1]] += value
    return entries


def untranslated(po: Path) -> list[str]:
    """Messages of a catalogue without a usable translation: empty, or fuzzy."""
    bad = []
    for entry in read_po(po.read_text(encoding="utf-8")):
        if entry.obsolete or not entry.msgid:
            continue
        if "fuzzy" in entry.flags or not all(entry.msgstr.values()) or not entry.msgstr:
            bad.append(entry.msgid)
    return bad


# ------------------------------------------------------------------------------ templates

# Words that stay as they are in every language.
TEMPLATE_WORDS = {"iFlow", "BXAuth", "iflow2api"}
VISIBLE_ATTRIBUTES = re.compile(r'\b(?:title|placeholder|alt|aria-label|value)\s*=\s*"([^"]*)"',
                                re.IGNORECASE)


def _outside_translation(source: str) -> str:
    """The template's literal text, with tags and translated blocks left out."""
    out: list[str] = []
    skip_until: str | None = None
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            bits = token.contents.split()
            if skip_until:
                if bits and bits[0] == skip_until:
                    skip_until = None
                continue
            if bits and bits[0] in {"blocktranslate", "blocktrans"}:
                skip_until = "end" + bits[0]
            elif bits and bits[0] == "comment":
                skip_until = "endcomment"
            elif bits[:2] == ["block", "bodyclass"]:  # CSS class names
                skip_until = "endblock"
            out.append("\x00")
        elif not skip_until:
            out.append(token.contents if token.token_type == TokenType.TEXT else "\x00")
    return "".join(out)


def bare_template_text(source: str) -> list[str]:
    """Words a template shows without a translate tag (code, styles and scripts aside)."""
    text = _outside_translation(source)
    text = re.sub(r"<(style|script|code|svg)\b.*?</\1>", " ", text,
                  flags=re.DOTALL | re.IGNORECASE)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.DOTALL)
    found = [value for value in VISIBLE_ATTRIBUTES.findall(text)
             if re.search(r"[A-Za-z]{2,}", value)]
    text = re.sub(r"<[^>]*>", " ", text)
    text = re.sub(r"&[a-z]+;|&#\d+;", " ", text)
    found += [w for w in re.findall(r"[A-Za-z][A-Za-z'.-]+", text) if w not in TEMPLATE_WORDS]
    return found


def our_templates() -> list[Path]:
    return sorted(p for app in APPS for p in (ROOT / app).glob("templates/**/*.html"))


# ------------------------------------------------------------------------------ Python code

TRANSLATORS = {"_", "gettext", "gettext_lazy", "gettext_noop", "ngettext", "ngettext_lazy",
               "pgettext", "pgettext_lazy"}
# Callables that show their argument at this position to a person.
SHOWN_ARGUMENT = {"CommandError": 0, "LoginError": 0, "ValidationError": 0, "Http404": 0,
                  "ApiError": 1, "UpstreamError": 1, "message_user": 1, "read_secret": 0,
                  "_say": 0, "write": 0, "success": 1, "error": 1, "warning": 1, "info": 1}
WRITERS = {"stdout", "stderr"}  # `.write` of these
MESSAGE_MODULE = "messages"  # `messages.success(request, …)`, not a logger's `.error`
SHOWN_KEYWORDS = {"help_text", "verbose_name", "verbose_name_plural", "label", "description",
                  "help", "title"}
SHOWN_CLASS_ATTRIBUTES = {"help", "title", "verbose_name", "verbose_name_plural"}
# Framework-free code (it cannot import Django: its fixed messages are translated at the
# edge, proxy/errors.py), migrations, and the OpenAPI document (for developers, in English).
# The OpenAPI document (proxy/schemas.py, the API's description) is protocol text, in English
# like the field names it describes.
PYTHON_EXEMPT = ("proxy/translate/", "/upstream/", "/migrations/", "proxy/schemas.py")
PYTHON_EXEMPT_CALLS = {("proxy/api.py", "GatewayApi")}
WORD = re.compile(r"[A-Za-z]{2,}")


def _literal(node: ast.AST) -> str | None:
    """The literal text an expression shows untranslated, if any."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mod):
            return _literal(node.left)
        return f"{_literal(node.left) or ''} {_literal(node.right) or ''}"
    if isinstance(node, ast.IfExp):
        return f"{_literal(node.body) or ''} {_literal(node.orelse) or ''}"
    return None


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _shown_arguments(call: ast.Call) -> list[ast.AST]:
    name = _name(call.func)
    shown = []
    position = SHOWN_ARGUMENT.get(name)
    receiver = _name(call.func.value) if isinstance(call.func, ast.Attribute) else ""
    if name == "write" and receiver not in WRITERS:
        position = None
    if name in {"success", "error", "warning", "info"} and receiver != MESSAGE_MODULE:
        position = None
    if position is not None and len(call.args) > position:
        shown.append(call.args[position])
    shown += [kw.value for kw in call.keywords if kw.arg in SHOWN_KEYWORDS]
    return shown


def untranslated_python(source: str, rel: str = "") -> list[tuple[int, str]]:
    """(line, text) of literal English shown to a person in a module (`rel`: its path)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            if _name(node.func) in TRANSLATORS or (rel, _name(node.func)) in PYTHON_EXEMPT_CALLS:
                continue
            candidates = _shown_arguments(node)
        elif isinstance(node, ast.ClassDef):
            candidates = [st.value for st in node.body if isinstance(st, ast.Assign)
                          and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)
                          and st.targets[0].id in SHOWN_CLASS_ATTRIBUTES]
        else:
            continue
        for candidate in candidates:
            text = _literal(candidate)
            if text and WORD.search(text):
                found.append((candidate.lineno, text[:80]))
    return found


def our_python() -> list[Path]:
    files = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = "/" + path.relative_to(ROOT).as_posix()
            if not any(part in rel for part in PYTHON_EXEMPT):
                files.append(path)
    return files
