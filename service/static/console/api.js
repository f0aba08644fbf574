// The console's one way to the API: the key from sessionStorage as the bearer header on every request,
// JSON errors turned into ApiError (the API's {"error": {code, message, field}}), and Server-Sent Events read
// through fetch (EventSource cannot send an Authorization header).
const KEY = "trainyard.api-key";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
    this.details = error.details || [];
  }
}

export const key = () => sessionStorage.getItem(KEY);

export async function api(path, { method = "GET", json, body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${key()}`, ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    signOut(); // a revoked or mistyped key: ask for another instead of failing every call
  }
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch { /* not JSON: the status says enough */ }
    throw new ApiError(response.status, parsed);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

// Follow an SSE route; calls onEvent(data, event name) per message, reconnects with Last-Event-ID after a drop.
// Returns a function that stops following.
export function follow(path, onEvent, { onEnd } = {}) {
  const controller = new AbortController();
  let lastId = null;
  let stopped = false;
  async function run() {
    while (!stopped) {
      try {
        const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
        if (lastId !== null) headers["Last-Event-ID"] = lastId;
        const response = await fetch(path, { headers, signal: controller.signal });
        if (!response.ok) throw new ApiError(response.status, null);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const message = { event: "message", data: "" };
            for (const line of block.split("\n")) {
              if (line.startsWith("id: ")) lastId = line.slice(4);
              else if (line.startsWith("event: ")) message.event = line.slice(7);
              else if (line.startsWith("data: ")) message.data += line.slice(6);
            }
            if (!message.data) continue; // a keep-alive comment
            const data = JSON.parse(message.data);
            if (message.event === "end") {
              stopped = true;
              if (onEnd) onEnd(data);
              return;
            }
            onEvent(data, message.event);
          }
        }
      } catch (error) {
        if (stopped || controller.signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 404)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000)); // the server went away: try again shortly
    }
  }
  run();
  return () => { stopped = true; controller.abort(); };
}

// --- signing in and out ------------------------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem(KEY);
  showSignIn();
}

function showSignIn() {
  document.getElementById("content").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("api-key").focus();
}

// Runs `start` once a key is known: at once when this tab has one, else after a sign-in that the API accepted.
export function whenSignedIn(start) {
  const form = document.getElementById("sign-in-form");
  const input = document.getElementById("api-key");
  const error = document.getElementById("api-key-error");
  document.getElementById("sign-out").addEventListener("click", () => {
    signOut();
    location.reload(); // nothing of the previous key's data stays on screen
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    error.textContent = "";
    input.removeAttribute("aria-invalid");
    if (!candidate) {
      error.textContent = "Enter an API key.";
      input.setAttribute("aria-invalid", "true");
      return;
    }
    const answer = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${candidate}` } });
    if (answer.status === 401) {
      error.textContent = "The API does not know this key (or it was revoked).";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY, candidate);
    input.value = "";
    open(start);
  });
  if (key()) open(start);
  else showSignIn();
}

function open(start) {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("content").hidden = false;
  start();
}

// --- small shared helpers -----------------------------------------------------------------------------------

export function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

export function announce(text) {
  document.getElementById("announce").textContent = text;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);

export function duration(job, now = Date.now()) {
  if (!job.started_at) return "–";
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  const s = Math.max(0, Math.round((end - Date.parse(job.started_at)) / 1000));
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

export const cost = (job) => (job.cost && job.cost.estimated_usd !== null && job.cost.estimated_usd !== undefined ? `$${job.cost.estimated_usd.toFixed(4)}` : "–");

export function lastAccuracy(job) {
  const epochs = job.metrics || [];
  for (let i = epochs.length - 1; i >= 0; i--) if (typeof epochs[i].accuracy === "number") return epochs[i].accuracy;
  return job.evaluation ? job.evaluation.accuracy : null;
}

export const lastEpoch = (job) => {
  const epochs = job.metrics || [];
  return epochs.length ? epochs[epochs.length - 1].epoch : "–";
};

export const badge = (status) => el("span", { class: `badge ${status}` }, status);

export const jobUrl = (id) => `/console/jobs/${encodeURIComponent(id)}`;
