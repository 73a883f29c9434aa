/* The API reference pages follow the admin's theme: its toggle keeps the choice in
   localStorage "theme" (auto, light or dark) on this origin; auto is the system's. Runs in
   <head>, before anything is drawn. */
(function () {
  "use strict";
  var saved = null;
  try { saved = window.localStorage.getItem("theme"); } catch (e) { /* storage blocked */ }
  var dark = saved === "dark" || (saved !== "light" &&
    window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
