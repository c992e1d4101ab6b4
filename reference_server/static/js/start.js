// Start a run: a form whose every check is the server's. The form does no validation of its own (novalidate), so
// what the server refuses comes back as problem+json `errors[]`, each shown next to the field it names.
import { ApiProblem, api, layout, report } from "./api.js";
import { el, fill, notice } from "./view.js";

const FIELDS = [
  // name, label, input attributes, hint
  ["model", "Model", { tag: "select", options: ["mlp", "convnet"] }, "mlp: 2 dense layers; convnet: 2 conv layers"],
  ["dataset", "Dataset", { tag: "select", options: [] }, "only datasets verified in the server's cache train"],
  ["steps", "Steps", { type: "number", inputmode: "numeric", placeholder: "1500" }, "optimizer steps"],
  ["batch_size", "Batch size", { type: "number", inputmode: "numeric", placeholder: "128" }, ""],
  ["learning_rate", "Learning rate", { type: "number", step: "any", placeholder: "0.001" }, "default 0.001 (adam)"],
  ["seed", "Seed", { type: "number", inputmode: "numeric", placeholder: "0" }, ""],
  ["log_every", "Log every", { type: "number", inputmode: "numeric", placeholder: "10" }, "steps between metric events"],
  ["eval_samples", "Eval samples", { type: "number", inputmode: "numeric", placeholder: "all" }, "test images per evaluation"],
  ["name", "Name", { type: "text", maxLength: 100, placeholder: "optional" }, "a label for people; not part of the config"],
  ["tags", "Tags", { type: "text", placeholder: "sweep-1, baseline" }, "comma-separated; filter the runs table by them"],
];
const NUMBERS = new Set(["steps", "batch_size", "learning_rate", "seed", "log_every", "eval_samples"]);

function input(name, spec) {
  if (spec.tag === "select") {
    return el("select", { id: name, name }, el("option", { value: "" }, "server default"), spec.options.map((o) => el("option", { value: o }, o)));
  }
  return el("input", { id: name, name, ...spec });
}

/** The request body: only the fields given, numbers as numbers (a word stays a word for the server to refuse). */
function body(form) {
  const out = {};
  for (const [name] of FIELDS) {
    const raw = form.elements[name].value.trim();
    if (!raw) continue;
    if (name === "tags") out.tags = raw.split(",").map((t) => t.trim()).filter(Boolean);
    else if (NUMBERS.has(name)) out[name] = Number.isNaN(Number(raw)) ? raw : Number(raw);
    else out[name] = raw;
  }
  return out;
}

function showErrors(form, problem) {
  const general = [];
  for (const { field, message } of problem.errors) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(field.split(".")[0])}"]`);
    if (slot) slot.textContent = slot.textContent ? `${slot.textContent}; ${message}` : message;
    else general.push(`${field}: ${message}`);
  }
  const status = form.querySelector("#form-status");
  fill(status, notice(general.length ? `${problem.message} (${general.join("; ")})` : problem.message, "error"));
}

async function main() {
  const mainEl = document.getElementById("main");
  try {
    await layout("start");
  } catch (error) {
    report(error);
    return;
  }
  const form = el("form", { id: "start-form", class: "grid", novalidate: true, method: "post" });
  for (const [name, label, spec, hint] of FIELDS) {
    form.append(
      el("label", { for: name }, label),
      input(name, spec),
      el("div", {}, el("span", { class: "field-error", "data-error-for": name }), " ", el("span", { class: "hint" }, hint)),
    );
  }
  form.append(el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", id: "submit" }, "Start"), el("div", { id: "form-status" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
    fill(form.querySelector("#form-status"));
    try {
      const run = await api("/api/training/runs", { method: "POST", body: body(form) });
      location.assign(`/runs/${run.run_id}`);
    } catch (error) {
      if (error instanceof ApiProblem && error.status !== 401) showErrors(form, error);
      else report(error);
    }
  });
  fill(mainEl, el("h1", {}, "Start a run"), el("section", { "data-needs-read": "" }, form));
  try {
    const { datasets } = await api("/api/datasets");
    const select = form.elements.dataset;
    for (const d of datasets) {
      const verified = d.verified;
      select.append(el("option", { value: d.name, disabled: !verified }, verified ? d.name : `${d.name} (not verified here)`));
    }
  } catch (error) {
    report(error);
  }
}

main();
