// Models: GET /v1/models; moving an alias is POST /v1/models/{name}/aliases/{alias}; try it is
// POST /v1/models/{id}/predict (multipart field `file`).
import { api, confirmAction, el, jobUrl, pct, whenSignedIn } from "./api.js";

let models = [];
const aliasName = document.getElementById("alias-name");
const aliasVersion = document.getElementById("alias-version");
const tryModel = document.getElementById("try-model");

async function load() {
  models = (await api("/v1/models")).models;
  const tbody = document.querySelector("#models tbody");
  tbody.replaceChildren(...models.map((m) => el("tr", { "data-id": m.id, "data-name": m.name || "", "data-version": m.version ?? "" },
    el("td", {}, m.name || el("span", { class: "none" }, "unnamed")),
    el("td", { class: "num" }, m.version ?? "–"),
    el("td", { class: "aliases" }, m.aliases.join(", ") || "–"),
    el("td", { class: "num" }, pct(m.metrics ? m.metrics.accuracy : null)),
    el("td", {}, m.available ? "yes" : el("span", { title: m.unavailable_reason || "" }, `no: ${m.unavailable_reason || "unknown"}`)),
    el("td", { class: "hide-narrow" }, el("code", {}, m.id)),
    el("td", { class: "hide-narrow" }, el("a", { href: jobUrl(m.job_id) }, m.job_id)))));
  document.getElementById("no-models").hidden = models.length > 0;
  const names = [...new Set(models.filter((m) => m.name).map((m) => m.name))];
  const keep = aliasName.value;
  aliasName.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(keep)) aliasName.value = keep;
  versions();
  const chosen = tryModel.value;
  tryModel.replaceChildren(...models.filter((m) => m.available).map((m) =>
    el("option", { value: m.id }, m.name ? `${m.name}@${m.version} (${m.id})` : m.id)));
  if ([...tryModel.options].some((o) => o.value === chosen)) tryModel.value = chosen;
  document.body.dataset.loaded = "true";
}

function versions() {
  const of = models.filter((m) => m.name === aliasName.value).sort((a, b) => b.version - a.version);
  aliasVersion.replaceChildren(...of.map((m) => el("option", { value: String(m.version) }, `${m.version}${m.aliases.length ? ` (${m.aliases.join(", ")})` : ""}`)));
}

async function moveAlias(event) {
  event.preventDefault();
  const error = document.getElementById("alias-error");
  const aliasInput = document.getElementById("alias-alias");
  error.textContent = "";
  aliasInput.removeAttribute("aria-invalid");
  const [name, alias, version] = [aliasName.value, aliasInput.value.trim(), Number(aliasVersion.value)];
  if (!name) { error.textContent = "No named model to move an alias of."; return; }
  const ok = await confirmAction(`Move ${name}@${alias}?`, `Requests to ${name}@${alias} will go to version ${version} from the next request on.`, "Move alias");
  if (!ok) return;
  try {
    await api(`/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, { method: "POST", json: { version } });
    document.getElementById("alias-result").textContent = `${name}@${alias} now points at version ${version}.`;
    await load();
  } catch (e) {
    error.textContent = e.message;
    if (e.field === "alias") { aliasInput.setAttribute("aria-invalid", "true"); aliasInput.focus(); }
  }
}

async function predict(file) {
  const result = document.getElementById("try-result");
  const preview = document.getElementById("try-preview");
  if (!file) return;
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  result.replaceChildren(el("p", { class: "help" }, "Classifying…"));
  const form = new FormData();
  form.append("file", file);
  const started = performance.now();
  try {
    const answer = await api(`/v1/models/${encodeURIComponent(tryModel.value)}/predict?top_k=5`, { method: "POST", body: form });
    const ms = performance.now() - started;
    result.replaceChildren(
      el("h3", {}, "Prediction"),
      el("ol", { class: "bars", id: "predictions" }, answer.predictions.map((p) => el("li", {},
        el("span", { class: "label" }, p.label),
        el("meter", { min: "0", max: "1", value: String(p.probability), "aria-label": `${p.label} probability` }),
        el("span", { class: "num" }, pct(p.probability))))),
      el("p", { class: "help", id: "latency" }, `Latency ${ms.toFixed(0)} ms in the browser` +
        (answer.timing_ms && answer.timing_ms.total ? `, ${answer.timing_ms.total.toFixed(0)} ms in the API` : "") +
        (answer.model_version ? `; model version ${answer.model_version}` : "")));
  } catch (e) {
    result.replaceChildren(el("p", { class: "field-error" }, e.message));
  }
}

whenSignedIn(async () => {
  aliasName.addEventListener("change", versions);
  document.getElementById("alias-form").addEventListener("submit", moveAlias);
  const zone = document.getElementById("dropzone");
  const file = document.getElementById("try-file");
  zone.addEventListener("click", () => file.click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); } });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); predict(e.dataTransfer.files[0]); });
  file.addEventListener("change", () => predict(file.files[0]));
  await load();
});
