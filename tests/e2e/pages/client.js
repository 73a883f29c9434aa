// Cross-origin calls to the gateway, driven by tests/e2e/test_browser.py via page.evaluate.
// Every call is bounded by an AbortSignal timeout and resolves (never rejects) to a plain
// object the test can inspect: {ok: false, name, message} when fetch itself failed.
"use strict";

const TIMEOUT_MS = 10000;

function show(status, text) {
  document.getElementById("status").textContent = status;
  if (text !== undefined) document.getElementById("out").textContent = text;
}

function failure(error) {
  show("failed: " + error.name, String(error.message));
  return { ok: false, name: error.name, message: String(error.message) };
}

function headersOf(response) {
  // Access-Control-Allow-Origin is not readable from a script: the test checks it on the wire.
  return { contentType: response.headers.get("content-type") };
}

async function callJson(url, headers, body) {
  show("calling " + url, "");
  try {
    const response = await fetch(url, {
      method: "POST", headers, body: JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const text = await response.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON: keep the text */ }
    let answer = null;
    if (json && Array.isArray(json.choices)) answer = json.choices[0].message.content;
    else if (json && Array.isArray(json.content)) answer = json.content[0].text;
    show("done " + response.status, answer ?? text);
    return { ok: true, status: response.status, ...headersOf(response), json, text, answer };
  } catch (error) {
    return failure(error);
  }
}

// Reads the body chunk by chunk; each network chunk gets its performance.now() arrival time
// (ms after fetch() was called). SSE events are parsed as they complete and tagged with the
// chunk that completed them.
async function callStream(url, headers, body) {
  show("streaming " + url, "");
  const started = performance.now();
  const chunks = [];
  const events = [];
  let answer = "";
  try {
    const response = await fetch(url, {
      method: "POST", headers, body: JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const headersAt = performance.now() - started;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const t = performance.now() - started;
      const text = decoder.decode(value, { stream: true });
      chunks.push({ t, bytes: value.length, text });
      buffer += text.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;  // comments / keep-alives
        const raw = data.join("\n");
        let json = null;
        try { json = JSON.parse(raw); } catch (_) { /* [DONE] */ }
        let delta = null;
        if (json && Array.isArray(json.choices) && json.choices.length) {
          delta = json.choices[0].delta?.content ?? null;
        } else if (json && json.type === "content_block_delta") {
          delta = json.delta?.text ?? null;
        }
        if (delta) {
          answer += delta;
          const item = document.createElement("li");
          item.textContent = Math.round(t) + " ms: " + JSON.stringify(delta);
          document.getElementById("chunks").appendChild(item);
          show("streaming", answer);
        }
        events.push({ t, event: name, raw, json, delta });
      }
    }
    show("done " + response.status, answer);
    return { ok: true, status: response.status, ...headersOf(response), headersAt, chunks,
             events, answer, total: performance.now() - started };
  } catch (error) {
    return failure(error);
  }
}

window.gateway = { callJson, callStream };
