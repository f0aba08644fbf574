// Compare: GET /v1/jobs (to pick) and GET /v1/jobs/{id} for each chosen job; parameters and curves side by side.
import { api, cost, duration, el, jobUrl, lastAccuracy, whenSignedIn } from "./api.js";
import { lineChart } from "./chart.js";

const chosen = new Set((new URLSearchParams(location.search).get("ids") || "").split(",").filter(Boolean));

async function picker() {
  const { jobs } = await api("/v1/jobs?limit=50");
  const list = document.getElementById("pick-list");
  list.replaceChildren(el("legend", { class: "visually-hidden" }, "Recent jobs"), ...jobs.map((job) => {
    const id = `pick-${job.id}`;
    return el("div", {},
      el("input", { type: "checkbox", id, value: job.id, checked: chosen.has(job.id) }),
      " ", el("label", { for: id, style: "display:inline; font-weight:400" }, `${job.name || job.id} · ${job.status} · ${new Date(job.created_at).toLocaleString()}`));
  }));
}

function cell(value) {
  return value === null || value === undefined ? "–" : typeof value === "object" ? JSON.stringify(value) : String(value);
}

async function compare(ids) {
  const jobs = await Promise.all(ids.map((id) => api(`/v1/jobs/${encodeURIComponent(id)}`)));
  const names = jobs.map((j) => j.name || j.id);
  const rows = [
    ["status", jobs.map((j) => j.status)],
    ["accuracy", jobs.map((j) => { const a = lastAccuracy(j); return a === null ? null : a.toFixed(4); })],
    ["best epoch", jobs.map((j) => (j.best ? j.best.epoch : null))],
    ["chosen lr", jobs.map((j) => (j.lr_sweep ? Number(j.lr_sweep.chosen_lr).toExponential(2) : null))],
    ["duration", jobs.map((j) => duration(j))],
    ["cost", jobs.map((j) => cost(j))],
    ...Object.keys(jobs[0].params).map((k) => [k, jobs.map((j) => j.params[k])]),
  ];
  const table = document.getElementById("params-table");
  table.replaceChildren(table.querySelector("caption"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "field"), jobs.map((j, i) => el("th", { scope: "col" }, el("a", { href: jobUrl(j.id) }, names[i]))))),
    el("tbody", {}, rows.map(([name, values]) => {
      const differs = new Set(values.map(cell)).size > 1;
      return el("tr", { class: differs ? "differs" : null },
        el("th", { scope: "row" }, name, differs ? el("span", { class: "visually-hidden" }, " (differs)") : null, differs ? " ≠" : ""),
        values.map((v) => el("td", {}, cell(v))));
    })));
  const series = (key) => jobs.map((j, i) => ({ name: names[i], points: (j.metrics || []).filter((e) => typeof e[key] === "number").map((e) => [e.epoch, e[key]]) }));
  lineChart(document.getElementById("compare-accuracy"), { title: "Validation accuracy per epoch, per job", xLabel: "epoch", yLabel: "accuracy", series: series("accuracy") });
  lineChart(document.getElementById("compare-loss"), { title: "Validation loss per epoch, per job", xLabel: "epoch", yLabel: "valid loss", series: series("valid_loss") });
  document.getElementById("comparison").hidden = false;
  document.body.dataset.loaded = "true";
}

whenSignedIn(async () => {
  await picker();
  document.getElementById("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = [...document.querySelectorAll("#pick-list input:checked")].map((c) => c.value);
    if (ids.length < 2) {
      document.getElementById("pick-error").textContent = "Pick at least two jobs.";
      return;
    }
    location.href = `?ids=${ids.join(",")}`;
  });
  if (chosen.size >= 2) await compare([...chosen]);
});
