// Copy buttons: <button data-copy="#element-id" data-copied="…" data-failed="…">. Copies the
// element's value (an input) or text (a <pre>) and says so in the next .copy-status element.
// navigator.clipboard needs a secure context (https, or http on 127.0.0.1 / localhost); on a
// plain-http LAN address the selection and execCommand("copy") are the fallback.
"use strict";
{
    const textOf = (el) => ("value" in el && el.tagName !== "BUTTON" ? el.value : el.textContent);

    const fallback = (el, text) => {
        if (el.select) {
            el.select();
        } else {
            const range = document.createRange();
            range.selectNodeContents(el);
            const selection = window.getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
        }
        try {
            return document.execCommand("copy");
        } catch (e) {
            return false;
        }
    };

    const say = (button, text) => {
        let status = button.nextElementSibling;
        if (!status || !status.classList.contains("copy-status")) {
            status = document.createElement("span");
            status.className = "copy-status";
            status.setAttribute("role", "status");
            button.after(status);
        }
        status.textContent = text;
    };

    document.addEventListener("click", async (event) => {
        const button = event.target.closest("[data-copy]");
        if (!button) return;
        const target = document.querySelector(button.dataset.copy);
        if (!target) return;
        const text = textOf(target);
        let ok = false;
        if (navigator.clipboard && window.isSecureContext) {
            try {
                await navigator.clipboard.writeText(text);
                ok = true;
            } catch (e) {
                ok = fallback(target, text);
            }
        } else {
            ok = fallback(target, text);
        }
        say(button, ok ? button.dataset.copied : button.dataset.failed);
    });
}
