"use strict";
// The admin header's part of instances/preferences.py. Loaded before the admin's theme.js:
// puts the user's saved theme into localStorage (theme.js applies it), sends every change of
// the theme toggle to the server, submits the language switcher on change, and after a login
// applies the user's saved language (a cookie, then one reload).
{
  const script = document.currentScript;
  const saved = script.dataset.theme;
  if (saved) {
    try { localStorage.setItem("theme", saved); } catch (e) { /* storage blocked: no harm */ }
  }

  const language = script.dataset.applyLanguage;
  if (language && script.dataset.cookie) {
    document.cookie = `${script.dataset.cookie}=${encodeURIComponent(language)}; path=/; SameSite=Lax`;
    window.location.reload();
  }

  function saveTheme() {
    const url = script.dataset.saveUrl;
    const theme = localStorage.getItem("theme");
    if (!url || !theme) return;
    const body = new URLSearchParams({theme: theme});
    fetch(url, {method: "POST", body: body, keepalive: true, credentials: "same-origin",
                headers: {"X-CSRFToken": script.dataset.csrf || ""}}).catch(() => {});
  }

  // On the document, so that it runs after theme.js's own click handler on the button.
  document.addEventListener("click", (event) => {
    if (event.target instanceof Element && event.target.closest(".theme-toggle")) saveTheme();
  });

  document.addEventListener("DOMContentLoaded", () => {
    for (const form of document.querySelectorAll("form.language-switcher")) {
      const select = form.querySelector("select");
      if (select) select.addEventListener("change", () => form.submit());
    }
  });
}
