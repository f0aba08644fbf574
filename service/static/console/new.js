// New job: a form built from the JobParams schema in GET /openapi.json, submitted to POST /v1/jobs.
import { ApiError, api, el, jobUrl, whenSignedIn } from "./api.js";

const form = document.getElementById("new-job");
const fields = document.getElementById("fields");
let schema = null;

// The field's own schema, with `anyOf: [X, null]` read as a nullable X.
function unwrap(prop) {
  if (prop.anyOf) {
    const real = prop.anyOf.filter((p) => p.type !== "null");
    if (real.length === 1) return { ...prop, ...real[0], nullable: true };
  }
  return prop;
}

function input(name, raw, required) {
  const prop = unwrap(raw);
  const id = `field-${name}`;
  const sentence = (text) => (text && !/[.)]$/.test(text) ? `${text}.` : text);
  const help = [sentence(prop.description), prop.nullable ? "Leave empty for null." : ""].filter(Boolean).join(" ");
  const bounds = [];
  let control;
  if (prop.enum) {
    control = el("select", { id, name }, prop.enum.map((v) => el("option", { value: v, selected: v === prop.default }, v)));
  } else if (prop.type === "boolean") {
    control = el("input", { id, name, type: "checkbox", checked: prop.default === true });
  } else if (prop.type === "integer" || prop.type === "number") {
    const min = prop.minimum ?? prop.exclusiveMinimum;
    const max = prop.maximum ?? prop.exclusiveMaximum;
    if (min !== undefined) bounds.push(`${prop.exclusiveMinimum !== undefined ? ">" : "≥"} ${min}`);
    if (max !== undefined) bounds.push(`${prop.exclusiveMaximum !== undefined ? "<" : "≤"} ${max}`);
    control = el("input", {
      id, name, type: "number", inputmode: prop.type === "integer" ? "numeric" : "decimal",
      step: prop.type === "integer" ? "1" : "any", min: prop.minimum, max: prop.maximum,
      value: prop.default ?? "", "data-kind": prop.type,
    });
  } else if (prop.type === "string") {
    control = el("input", { id, name, type: "text", value: prop.default ?? "", maxlength: prop.maxLength, placeholder: (prop.examples || [])[0], required });
  } else {
    // Nested objects (lr_sweep): JSON, defaulting to the schema's first example.
    control = el("textarea", { id, name, rows: "2", "data-kind": "json", spellcheck: "false" },
      JSON.stringify(prop.default ?? (prop.examples || [])[0] ?? null));
  }
  if (prop.nullable) control.dataset.nullable = "true";
  control.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  const label = el("label", { for: id, class: prop.type === "boolean" ? "inline" : null }, name, required ? " (required)" : "");
  return el("div", { class: "field", "data-field": name },
    prop.type === "boolean" ? el("div", {}, control, " ", label) : [label, control],
    el("p", { class: "help", id: `${id}-help` }, [help, bounds.length ? `Allowed: ${bounds.join(", ")}.` : ""].filter(Boolean).join(" ")),
    el("p", { class: "field-error", id: `${id}-error` }));
}

function build(openapi) {
  schema = openapi.components.schemas.JobParams;
  const required = new Set(schema.required || []);
  const names = Object.keys(schema.properties);
  // The one required field first, the rest in the schema's order.
  names.sort((a, b) => Number(required.has(b)) - Number(required.has(a)));
  fields.replaceChildren(...names.map((name) => input(name, schema.properties[name], required.has(name))));
}

function collect() {
  const body = {};
  for (const control of form.querySelectorAll("[name]")) {
    const name = control.name;
    const original = unwrap(schema.properties[name]);
    let value;
    if (control.type === "checkbox") value = control.checked;
    else if (control.value.trim() === "") {
      if (control.dataset.nullable) value = null; else continue; // the API's default applies
    } else if (control.dataset.kind === "json") {
      try { value = JSON.parse(control.value); } catch { throw new ApiError(422, { error: { message: `${name}: not valid JSON`, field: name } }); }
    } else if (control.dataset.kind === "integer" || control.dataset.kind === "number") value = Number(control.value);
    else value = control.value.trim();
    if (JSON.stringify(value) === JSON.stringify(original.default ?? undefined)) continue; // leave defaults to the API
    body[name] = value;
  }
  return body;
}

function clearErrors() {
  document.getElementById("form-error").textContent = "";
  form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
}

// "lr_sweep.trials" belongs to the lr_sweep field; "body" to the whole form.
function showError(field, message) {
  const top = (field || "").split(/[.[]/)[0];
  const control = top ? form.querySelector(`[name="${CSS.escape(top)}"]`) : null;
  if (!control) {
    document.getElementById("form-error").textContent = message;
    return null;
  }
  control.setAttribute("aria-invalid", "true");
  document.getElementById(`field-${top}-error`).textContent = message;
  return control;
}

whenSignedIn(async () => {
  const response = await fetch("/openapi.json");
  build(await response.json());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    try {
      const job = await api("/v1/jobs", { method: "POST", json: collect() });
      location.href = jobUrl(job.id);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const problems = error.details.length ? error.details : [{ field: error.field, message: error.message }];
      const first = problems.map((p) => showError(p.field, p.message)).find(Boolean);
      if (first) first.focus();
    }
  });
});
