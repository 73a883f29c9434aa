// The guided "add an upstream" page's model list (accounts/guided_views.py): a filter for long
// lists (OpenRouter lists hundreds) and buttons that tick or untick the models shown.
"use strict";
{
    const filter = document.getElementById("model-filter");
    const items = [...document.querySelectorAll(".guided-models li")];
    const shown = () => items.filter((li) => !li.hidden);
    if (filter) {
        filter.addEventListener("input", () => {
            const words = filter.value.trim().toLowerCase();
            for (const li of items) li.hidden = Boolean(words) && !li.textContent.toLowerCase().includes(words);
        });
        for (const [id, state] of [["tick-shown", true], ["untick-all", false]]) {
            document.getElementById(id).addEventListener("click", () => {
                for (const li of state ? shown() : items) li.querySelector("input").checked = state;
            });
        }
    }
}
