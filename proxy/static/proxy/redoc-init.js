/* Starts ReDoc on /redoc with the page's settings, in dark colours when the page is dark
   (proxy/static/proxy/docs.js decided). An external file: the page's CSP allows no inline
   script. */
(function () {
  "use strict";
  var options = JSON.parse(document.getElementById("redoc-settings").textContent);
  var element = document.getElementById("redoc-ui");
  if (document.documentElement.dataset.theme === "dark") {
    options.theme = {
      colors: {
        primary: { main: "#79aec8" },
        text: { primary: "#e6e6e6", secondary: "#b0b0b0" },
        border: { dark: "#555", light: "#333" },
        http: { get: "#6bbd5b", post: "#248fb2", delete: "#e27a7a" }
      },
      schema: { nestedBackground: "#1e1e1e", typeNameColor: "#b0b0b0", linesColor: "#555" },
      sidebar: { backgroundColor: "#1b1b1b", textColor: "#e6e6e6" },
      rightPanel: { backgroundColor: "#101010", textColor: "#e6e6e6" },
      typography: { links: { color: "#79aec8" }, code: { backgroundColor: "#2a2a2a",
                                                          color: "#e6e6e6" } }
    };
  }
  window.Redoc.init(element.dataset.specUrl, options, element);
})();
