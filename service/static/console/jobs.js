// Jobs: GET /v1/jobs (newest first, by status and name, a page at a time); rows follow GET /v1/events?stream=true
// and re-read only the job an event names (GET /v1/jobs/{id}): no polling of the list.
import { announce, api, badge, cost, duration, el, follow, jobUrl, lastAccuracy, lastEpoch, pct, whenSignedIn } from "./api.js";

const PAGE = 50;
const tbody = document.querySelector("#jobs tbody");
const form = document.getElementById("filters");
const more = document.getElementById("more");
const compare = document.getElementById("compare-selected");
const statusInput = document.getElementById("filter-status");
const nameInput = document.getElementById("filter-name");
const selected = new Set();
let cursor = null;
let filter = { status: "", name: "" };

function row(job) {
  const name = job.name || job.id;
  const box = el("input", { type: "checkbox", "aria-label": `Select ${name} for comparison`, checked: selected.has(job.id) });
  box.addEventListener("change", () => {
    if (box.checked) selected.add(job.id); else selected.delete(job.id);
    compare.disabled = selected.size < 2;
  });
  const progress = el("progress", { max: "1", value: String(job.progress), "aria-label": `progress of ${name}` });
  const cell = (label, attrs, ...content) => el("td", { "data-label": label, ...attrs }, ...content);
  return el("tr", { "data-id": job.id, "data-status": job.status },
    cell("Compare", { class: "pick" }, box),
    cell("Job", { class: "name" }, el("a", { href: jobUrl(job.id) }, name), job.name ? el("div", { class: "help" }, job.id) : null),
    cell("Status", {}, badge(job.status)),
    cell("Phase", { class: "phase" }, job.phase || "–"),
    cell("Progress", {}, progress, " ", `${Math.round(job.progress * 100)}%`),
    cell("Epoch", { class: "num epoch" }, lastEpoch(job)),
    cell("Accuracy", { class: "num accuracy" }, pct(lastAccuracy(job))),
    cell("Duration", { class: "num duration", "data-started": job.started_at || "", "data-finished": job.finished_at || "" }, duration(job)),
    cell("Cost", { class: "num" }, cost(job)),
    cell("Created", {}, new Date(job.created_at).toLocaleString()));
}

function matches(job) {
  return (!filter.status || job.status === filter.status) &&
    (!filter.name || (job.name || "").toLowerCase().includes(filter.name.toLowerCase()));
}

async function load(append = false) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (filter.status) query.set("status", filter.status);
  if (filter.name) query.set("name", filter.name);
  if (append && cursor) query.set("cursor", cursor);
  const page = await api(`/v1/jobs?${query}`);
  if (!append) tbody.replaceChildren();
  tbody.append(...page.jobs.map(row));
  cursor = page.next_cursor;
  more.hidden = !cursor;
  document.getElementById("empty").hidden = tbody.children.length > 0;
  document.body.dataset.loaded = "true";
}

// An event names a job: re-read that one job and put its row where it belongs (new jobs go on top).
const pending = new Map();
function refresh(jobId) {
  if (pending.has(jobId)) return;
  pending.set(jobId, setTimeout(async () => {
    pending.delete(jobId);
    let job;
    try { job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`); } catch { return; }
    const old = tbody.querySelector(`tr[data-id="${CSS.escape(jobId)}"]`);
    if (!matches(job)) { if (old) old.remove(); return; }
    if (old) {
      if (old.dataset.status !== job.status) announce(`${job.name || job.id} is ${job.status}`);
      old.replaceWith(row(job));
    } else {
      tbody.prepend(row(job));
      document.getElementById("empty").hidden = true;
    }
  }, 150)); // several events of one job within a moment: one read
}

function tick() {
  // Running jobs' durations grow with the clock, not with the server: no request needed.
  for (const cell of tbody.querySelectorAll("td.duration")) {
    if (cell.dataset.started && !cell.dataset.finished) cell.textContent = duration({ started_at: cell.dataset.started });
  }
}

whenSignedIn(() => {
  const params = new URLSearchParams(location.search);
  filter = { status: params.get("status") || "", name: params.get("name") || "" };
  statusInput.value = filter.status;
  nameInput.value = filter.name;
  const state = document.getElementById("live-state");
  // Follow first, then list: an event that lands while the list loads still updates its row.
  follow("/v1/events?stream=true", (event) => {
    state.textContent = "Live: rows update as events arrive.";
    refresh(event.job_id);
  });
  state.textContent = "Live: rows update as events arrive.";
  load().catch((error) => { state.textContent = `Could not list jobs: ${error.message}`; });
  setInterval(tick, 1000);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filter = { status: statusInput.value, name: nameInput.value.trim() };
    const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
    history.replaceState(null, "", `?${query}`);
    load();
  });
  more.addEventListener("click", () => load(true));
  compare.addEventListener("click", () => { location.href = `/console/compare?ids=${[...selected].join(",")}`; });
});
