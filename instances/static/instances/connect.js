// "Connect a client" (instances/connect.py): the selects reload the page for another instance,
// key or model; a key pasted here (or handed over in the URL's #key=… fragment by the new-key
// page: browsers never send a fragment) replaces the placeholder in every snippet, in this page
// only. The fragment is removed from the address bar (and the history entry) at once.
"use strict";
{
    const form = document.querySelector(".connect-form");
    const paste = document.getElementById("connect-paste");
    if (form && paste) {
        for (const select of form.querySelectorAll("select")) {
            select.addEventListener("change", () => form.submit());
        }
        const placeholder = paste.dataset.placeholder;
        const snippets = [...document.querySelectorAll(".connect-snippet")];
        for (const pre of snippets) pre.dataset.template = pre.textContent;
        const fill = () => {
            const key = paste.value.trim() || placeholder;
            for (const pre of snippets) pre.textContent = pre.dataset.template.split(placeholder).join(key);
        };
        paste.addEventListener("input", fill);
        const fragment = new URLSearchParams(window.location.hash.slice(1));
        if (fragment.get("key")) {
            paste.value = fragment.get("key");
            history.replaceState(null, "", window.location.pathname + window.location.search);
            fill();
        }
    }
}
