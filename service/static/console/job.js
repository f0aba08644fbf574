// One job: GET /v1/jobs/{id}, its events live (GET /v1/jobs/{id}/events?stream=true), the report's sections
// (GET /v1/jobs/{id}/report), cancel and retry (POST .../cancel, .../retry), the revisions made from it and the
// one it trained on (GET/POST /v1/jobs/{id}/revisions).
import { announce, api, badge, confirmAction, cost, duration, el, follow, jobUrl, lastAccuracy, pct, whenSignedIn } from "./api.js";
import { lineChart } from "./chart.js";

const jobId = document.getElementById("job").dataset.jobId;
const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
const REPORT_SECTIONS = ["model", "dataset", "evaluation", "params"];
const marks = new Map(); // image path -> {action, label}
let job = null;
let stopFollowing = null;
const phaseTimes = {};

function renderFacts() {
  document.getElementById("job-name").textContent = job.name || job.id;
  document.getElementById("job-status").replaceChildren(badge(job.status));
  document.title = `${job.name || job.id} · Trainyard`;
  const facts = [
    ["id", job.id], ["status", job.status], ["phase", job.phase || "–"], ["progress", `${Math.round(job.progress * 100)}%`],
    ["dataset", job.params.dataset_uri], ["arch", `${job.params.arch} at ${job.params.image_size} px`],
    ["last accuracy", pct(lastAccuracy(job))], ["duration", duration(job)], ["cost", cost(job)],
    ["attempt", String(job.attempt)], ["model", job.model ? job.model.id : "–"],
  ];
  document.getElementById("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, v)]));
  document.getElementById("cancel").hidden = ["succeeded", "failed", "cancelled"].includes(job.status);
  document.getElementById("retry").hidden = !["failed", "cancelled"].includes(job.status);
  const error = document.getElementById("job-error");
  error.hidden = !job.error;
  if (job.error) {
    document.getElementById("job-error-title").textContent = job.error.phase ? `Failed during ${job.error.phase}` : "Failed";
    document.getElementById("job-error-text").replaceChildren(el("strong", {}, job.error.code), `: ${job.error.message}`);
  }
}

function renderTimeline() {
  const order = [...document.querySelectorAll("#timeline li")].map((li) => li.dataset.phase);
  const now = job.phase ? order.indexOf(job.phase) : -1;
  const failedAt = job.error && job.error.phase ? order.indexOf(job.error.phase) : -1;
  document.querySelectorAll("#timeline li").forEach((li, i) => {
    let state = "pending";
    if (job.status === "succeeded" && phaseTimes[li.dataset.phase]) state = "done";
    else if (failedAt === i) state = "failed";
    else if (now > i || (now === -1 && phaseTimes[li.dataset.phase])) state = "done";
    else if (now === i) state = job.status === "running" ? "current" : (job.status === "failed" ? "failed" : "done");
    li.className = state;
    const at = phaseTimes[li.dataset.phase];
    li.textContent = `${li.dataset.phase}${at ? ` ${new Date(at).toLocaleTimeString()}` : ""}`;
    li.setAttribute("aria-label", `${li.dataset.phase}: ${state}`);
    if (state === "current") li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
  });
}

function renderCharts() {
  const sweep = job.lr_sweep;
  const lrHost = document.getElementById("lr-chart");
  if (sweep && sweep.lrs && sweep.losses) {
    const markers = [{ x: sweep.chosen_lr, label: "chosen" }];
    for (const [name, value] of Object.entries(sweep.suggestions || {})) {
      if (value !== sweep.chosen_lr) markers.push({ x: value, label: name, alt: true });
    }
    lineChart(lrHost, {
      title: "LR range test: smoothed loss against learning rate", xLabel: "learning rate (log)", yLabel: "loss", logX: true,
      series: [{ name: "smoothed loss", points: sweep.lrs.map((lr, i) => [lr, sweep.losses[i]]) }], markers,
    });
  } else if (sweep) {
    lrHost.replaceChildren(el("p", {}, `Chosen learning rate: ${sweep.chosen_lr} (${sweep.method || "given"}).`));
  } else {
    lrHost.replaceChildren(el("p", { class: "none" }, "No LR sweep yet."));
  }
  const epochs = job.metrics || [];
  const series = (key) => epochs.filter((e) => typeof e[key] === "number").map((e) => [e.epoch, e[key]]);
  lineChart(document.getElementById("loss-chart"), {
    title: "Training and validation loss per epoch", xLabel: "epoch", yLabel: "loss",
    series: [{ name: "train loss", points: series("train_loss") }, { name: "valid loss", points: series("valid_loss") }],
  });
  lineChart(document.getElementById("accuracy-chart"), {
    title: "Validation accuracy per epoch", xLabel: "epoch", yLabel: "accuracy",
    series: [{ name: "accuracy", points: series("accuracy") }],
  });
  document.getElementById("accuracy-chart").dataset.epochs = String(epochs.length);
}

async function refresh() {
  job = await api(path);
  renderFacts();
  renderTimeline();
  renderCharts();
  document.body.dataset.status = job.status;
}

// --- the report's content: the same sections the downloadable report shows ------------------------------

async function loadReport() {
  const response = await api(`${path}/report`, { raw: true });
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  const parts = REPORT_SECTIONS.map((id) => doc.getElementById(id)).filter(Boolean).map((section) => {
    section.classList.add("card");
    section.id = `report-${section.id}`;
    return document.adoptNode(section);
  });
  document.getElementById("report-parts").replaceChildren(...parts);
  setUpCleaning();
}

function setUpCleaning() {
  const figures = [...document.querySelectorAll("#report-parts figure[data-path]")];
  const classes = (job.dataset && job.dataset.classes) || [];
  const canClean = job.status === "succeeded" && figures.length && (job.artifacts || {})["dataset.csv"];
  document.getElementById("clean").hidden = !canClean;
  if (!canClean) return;
  figures.forEach((figure, i) => {
    const id = `mark-${i}`;
    const select = el("select", { id, "data-path": figure.dataset.path },
      el("option", { value: "fine" }, "fine"),
      classes.filter((c) => c !== figure.dataset.actual).map((c) => el("option", { value: `relabel:${c}` }, `relabel as ${c}`)),
      el("option", { value: "exclude" }, "exclude"));
    const mark = marks.get(figure.dataset.path);
    select.value = mark ? (mark.action === "relabel" ? `relabel:${mark.label}` : mark.action) : "fine";
    select.addEventListener("change", () => setMark(figure.dataset.path, select.value));
    figure.append(el("label", { for: id, class: "visually-hidden" }, `Mark ${figure.dataset.path}`), select);
  });
}

function setMark(imagePath, value) {
  if (value === "fine") marks.delete(imagePath);
  else if (value === "exclude") marks.set(imagePath, { action: "exclude" });
  else marks.set(imagePath, { action: "relabel", label: value.slice("relabel:".length) });
  // The same image can be among the most wrong and the least certain: keep both of its menus in step.
  document.querySelectorAll(`select[data-path="${CSS.escape(imagePath)}"]`).forEach((s) => { s.value = value; });
  const relabelled = [...marks.values()].filter((m) => m.action === "relabel").length;
  const excluded = marks.size - relabelled;
  document.getElementById("clean-summary").textContent = marks.size ? `${relabelled} to relabel, ${excluded} to exclude.` : "No marks yet.";
  document.getElementById("revise").disabled = marks.size === 0;
}

async function revise() {
  const body = { marks: [...marks].map(([p, m]) => ({ path: p, ...m })), retrain: true };
  const ok = await confirmAction("Create a revision and retrain?",
    `${body.marks.length} image(s) change; a new job trains on the revision with this job's parameters.`, "Create and retrain");
  if (!ok) return;
  const error = document.getElementById("revise-error");
  error.textContent = "";
  try {
    const revision = await api(`${path}/revisions`, { method: "POST", json: body });
    announce(`Revision ${revision.id} created; job ${revision.retrain_job_id} submitted`);
    location.href = jobUrl(revision.retrain_job_id);
  } catch (e) {
    error.textContent = e.message;
  }
}

async function loadRevisions() {
  const found = await api(`${path}/revisions`);
  const list = document.getElementById("revisions-list");
  list.replaceChildren(...found.revisions.map((r) => el("li", {},
    `${r.id}: ${r.changes.relabelled} relabelled, ${r.changes.excluded} excluded, ${r.images} images → `, el("code", {}, r.dataset_uri))));
  document.getElementById("revisions").hidden = !found.revisions.length;
  const from = found.trained_on;
  const box = document.getElementById("revision-delta");
  if (!from) return;
  const base = await api(`/v1/jobs/${encodeURIComponent(from.job_id)}`);
  const before = lastAccuracy(base), after = lastAccuracy(job);
  const text = document.getElementById("revision-delta-text");
  const change = before !== null && after !== null ? after - before : null;
  text.replaceChildren(
    `This job trains on revision ${from.id} of `, el("a", { href: jobUrl(base.id) }, base.name || base.id),
    ` (${from.changes.relabelled} relabelled, ${from.changes.excluded} excluded). Accuracy ${pct(before)} → ${pct(after)} `,
    change === null ? "" : el("span", { class: `delta ${change >= 0 ? "up" : "down"}`, id: "accuracy-delta" },
      `(${change >= 0 ? "+" : "−"}${Math.abs(change * 100).toFixed(1)} points)`));
  box.hidden = false;
}

// --- actions -------------------------------------------------------------------------------------------

async function act(what) {
  const ok = await confirmAction(what === "cancel" ? "Cancel this job?" : "Retry this job?",
    what === "cancel" ? "Its Ray work stops; a cancelled job can be retried later." : "It runs again from its last checkpoint.",
    what === "cancel" ? "Cancel job" : "Retry job");
  if (!ok) return;
  const result = document.getElementById("action-result");
  try {
    await api(what === "cancel" ? `${path}/cancel` : `${path}/retry`, { method: "POST" });
    result.textContent = what === "cancel" ? "Cancelled." : "Queued again.";
    await refresh();
    if (what === "retry") start();
  } catch (e) {
    result.textContent = e.message;
  }
}

async function downloadReport() {
  const response = await api(`${path}/report`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `trainyard-report-${jobId}.html` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// Events that change what the report shows: re-read it once the stage that wrote it is over.
const REPORT_EVENTS = new Set(["validated", "succeeded", "failed", "cancelled", "published"]);
let refreshTimer = null;
function start() {
  if (stopFollowing) stopFollowing();
  const log = document.getElementById("events");
  stopFollowing = follow(`${path}/events?stream=true`, (event) => {
    if (event.kind === "phase" && event.data) phaseTimes[event.data.phase] = event.at;
    log.append(el("li", {}, `${new Date(event.at).toLocaleTimeString()} ${event.kind}: ${event.message}`));
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refresh().catch(() => {}), 100);
    if (REPORT_EVENTS.has(event.kind)) loadReport().catch(() => {});
  }, { onEnd: async () => { await refresh(); await loadReport(); await loadRevisions(); document.body.dataset.ended = "true"; } });
}

whenSignedIn(async () => {
  document.getElementById("cancel").addEventListener("click", () => act("cancel"));
  document.getElementById("retry").addEventListener("click", () => act("retry"));
  document.getElementById("download-report").addEventListener("click", downloadReport);
  document.getElementById("revise").addEventListener("click", revise);
  try {
    await refresh();
  } catch (e) {
    document.getElementById("job-name").textContent = e.status === 404 ? `No job ${jobId}` : e.message;
    return;
  }
  await loadReport();
  await loadRevisions();
  start();
});
