// The live status page: opens the status websocket, renders each snapshot into the tables the
// server rendered first, and reconnects with backoff. No dependencies; text only via
// textContent (never innerHTML), so nothing in a snapshot can inject markup.
(function () {
  "use strict";

  const page = document.getElementById("status-page");
  const labelsNode = document.getElementById("status-labels");
  if (!page || !labelsNode || !("WebSocket" in window)) {
    return;
  }
  const labels = JSON.parse(labelsNode.textContent);
  const badge = document.getElementById("status-connection");
  const FORBIDDEN = 4403;
  const MIN_DELAY = 1000;
  const MAX_DELAY = 30000;
  let delay = MIN_DELAY;
  let socket = null;
  let retry = null;
  let updates = 0;

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // The browser's local time, in the same shape the server renders.
  function formatTime(iso) {
    if (!iso) {
      return "—";
    }
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) {
      return iso;
    }
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function nameOf(value, fallback) {
    return (labels.names && labels.names[value]) || fallback || value;
  }

  // el("td", {className: "num"}, "text", childNode, …)
  function el(tag, props) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (let i = 2; i < arguments.length; i++) {
      const child = arguments[i];
      if (child === null || child === undefined || child === "") {
        continue;
      }
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function stateCell(state, display, note) {
    return el("td", {},
      el("span", {className: "status-state state-" + state}, nameOf(state, display)),
      note ? el("span", {className: "status-note"}, note) : null);
  }

  function fill(id, rows, columns, emptyText, makeRow) {
    const body = document.getElementById(id);
    if (!body) {
      return;
    }
    const out = rows.length ? rows.map(makeRow) :
      [el("tr", {}, el("td", {className: "empty", colSpan: columns}, emptyText))];
    body.replaceChildren.apply(body, out);
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) {
      node.textContent = text;
    }
  }

  function refreshText(account) {
    if (account.refresh_state === "due") {
      return labels.due;
    }
    if (account.refresh_state === "refreshing") {
      return labels.refreshing;
    }
    return formatTime(account.next_refresh);
  }

  function render(data) {
    const running = data.instances.filter((i) => i.state === "running").length;
    const active = data.accounts.filter((a) => a.state === "active").length;
    setText("status-rpm", data.requests_per_minute);
    setText("status-streams", data.active_streams);
    setText("status-instances-running", running + " / " + data.instances.length);
    setText("status-accounts-active", active + " / " + data.accounts.length);
    const updated = document.getElementById("status-updated");
    if (updated) {
      updated.textContent = formatTime(data.generated_at);
      updated.setAttribute("datetime", data.generated_at);
    }
    fill("status-instances", data.instances, 6, labels.no_instances, (i) => el("tr", {},
      el("td", {}, i.name),
      el("td", {}, i.host + ":" + i.port),
      el("td", {}, i.enabled ? labels.yes : labels.no),
      stateCell(i.state, i.state_display, i.state_message),
      el("td", {className: "num"}, i.requests_per_minute),
      el("td", {className: "num"}, i.active_streams)));
    fill("status-accounts", data.accounts, 5, labels.no_accounts, (a) => el("tr", {},
      el("td", {}, a.label, a.enabled ? null :
        el("span", {className: "status-note"}, labels.disabled)),
      el("td", {}, nameOf(a.provider, a.provider_display)),
      stateCell(a.state, a.state_display, a.cooldown_until ?
        labels.until.replace("%(time)s", formatTime(a.cooldown_until)) : null),
      el("td", {className: "time"}, refreshText(a)),
      el("td", {className: "error"}, a.error)));
    fill("status-errors", data.errors, 5, labels.no_errors, (e) => el("tr", {},
      el("td", {className: "time"}, formatTime(e.time)),
      el("td", {}, e.instance),
      el("td", {}, e.model),
      el("td", {className: "num"}, el("span", {className: "status-code"}, e.status)),
      el("td", {className: "error"}, e.error)));
    fill("status-budgets", data.budgets || [], 5, labels.no_budgets, (b) => el("tr", {},
      el("td", {}, b.owner),
      el("td", {}, b.period_display),
      el("td", {}, b.usage),
      el("td", {className: "num"}, b.percent),
      el("td", {className: "state-" + b.state}, labels.budget_states[b.state])));
    updates += 1;
    page.dataset.updates = String(updates); // end-to-end tests wait on it
  }

  function setConnection(state) {
    page.dataset.connection = state;
    badge.textContent = labels[state];
    badge.classList.toggle("is-live", state === "live");
    badge.classList.toggle("is-offline", state === "disconnected" || state === "forbidden");
  }

  function connect() {
    retry = null;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + window.location.host + page.dataset.wsPath);
    setConnection("connecting");
    socket.onmessage = function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (message.type === "snapshot") {
        delay = MIN_DELAY; // a snapshot arrived: the connection works
        setConnection("live");
        render(message.data);
      }
    };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === FORBIDDEN) { // logged out or no longer staff: retrying cannot help
        setConnection("forbidden");
        return;
      }
      setConnection("disconnected");
      // Backoff with jitter, so a restarted server is not hit by every page at once.
      retry = window.setTimeout(connect, delay * (0.8 + Math.random() * 0.4));
      delay = Math.min(delay * 2, MAX_DELAY);
    };
  }

  function reconnectNow() {
    if (retry !== null) {
      window.clearTimeout(retry);
      delay = MIN_DELAY;
      connect();
    }
  }

  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      reconnectNow();
    }
  });
  connect();
})();
