"""Which instance a listening port belongs to, in this process: the server registers each
listener it opens, and the API looks the instance of a request up by the port it came in on.

Listeners are keyed on the instance's id, never its name: a rename changes nothing here, so a
request can never be served with another instance's policy while the name changes.

Process-wide rather than in the Runtime (proxy/runtime.py): Django's ALLOWED_HOSTS check
(iflow2api_site/hosts.py, a setting) reads the listeners' addresses for every request.
"""

from __future__ import annotations

NO_INSTANCE = 0  # no row has id 0: the directory finds nothing and the request is refused

_by_port: dict[int, int] = {}  # port → instance id
_hosts: dict[int, str] = {}  # port → the address it listens on
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def register(port: int, instance_id: int, host: str = "") -> None:
    _by_port[port] = instance_id
    _hosts[port] = host


def unregister(port: int) -> None:
    """Forgets the port (tests). The supervisor does not call it when it closes a listener:
    connections that listener accepted carry on, and their requests stay its instance's."""
    _by_port.pop(port, None)
    _hosts.pop(port, None)


def instance_for_port(port: int | None) -> int | None:
    """The id of the instance served on `port`. None when this process opened no listener
    (tests that call the app directly, a server started some other way): the default
    instance. NO_INSTANCE for a port this process never opened while it serves others."""
    if not _by_port:
        return None
    if port is None:
        return NO_INSTANCE
    return _by_port.get(port, NO_INSTANCE)


def host_port(host: str, port: int) -> str:
    """An address as people write it: IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def listener_hosts() -> list[str]:
    """The names the listeners answer to, as a Host header spells them (IPv6 in brackets);
    a wildcard address (0.0.0.0, ::) names nothing: clients reach it by names we cannot know."""
    names = []
    for host in _hosts.values():
        if host in WILDCARDS:
            continue
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    return names
