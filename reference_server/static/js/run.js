// A run's page: its whole history replayed from the event stream, then live; charts, checkpoints, config,
// provenance and evidence; cancel and resume where the run's state allows them. The page closes its stream on
// `end` (a finished run has nothing more to say), and opens it again after a resume, from the last event it has.
import { ApiProblem, api, layout, report } from "./api.js";
import { applyEvent, newHistory, RunCharts } from "./charts.js";
import { duration, el, fill, notice, number, percent, statusBadge, tagList, time } from "./view.js";

const runId = decodeURIComponent(location.pathname.split("/")[2] || "");
const ACTIVE = new Set(["queued", "running"]);
const RESUMABLE = new Set(["interrupted", "failed"]);
const history = newHistory();
const page = { run: null, stream: null, streamOpens: 0, events: 0, ended: false };
window.dashboard = Object.assign(window.dashboard || {}, { history, page });

const title = el("h1", { id: "title" }, runId);
const notices = el("div", { id: "notices" });
const live = el("span", { id: "live", class: "live" });
const facts = el("dl", { class: "facts", id: "facts" });
const actions = el("div", { class: "toolbar", id: "actions" });
const chartsEl = el("div", { id: "charts", class: "charts" });
const checkpoints = el("tbody", { id: "checkpoints-body" });
const files = el("ul", { id: "files" });
const config = el("pre", { id: "config" });
const provenance = el("pre", { id: "provenance" });
let charts = null;

function renderFacts() {
  const run = page.run;
  const p = run.progress;
  fill(title, run.name || run.run_id, " ", statusBadge(run.status), " ", live);
  const rows = [
    ["run", el("code", {}, run.run_id)],
    ["model / dataset", `${run.config.model} on ${run.config.dataset}`],
    ["progress", [el("progress", { max: p.total_steps, value: p.step }), ` step ${p.step.toLocaleString("en-US")} of ${p.total_steps.toLocaleString("en-US")}`]],
    ["latest loss", number(run.latest_metrics?.loss)],
    ["last eval accuracy", percent(run.latest_eval?.eval_accuracy)],
    ["created", time(run.created_at)],
    ["started", time(run.started_at)],
    ["finished", time(run.finished_at)],
    ["duration", el("span", { id: "duration" }, duration(run.started_at, run.finished_at))],
    ["device", run.device || ""],
    ["tags", tagList(run.tags)],
  ];
  if (run.error) rows.push(["error", `${run.error.code}: ${run.error.message}`]);
  fill(facts, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const resumable = RESUMABLE.has(run.status) && run.checkpoints.length > 0;
  fill(
    actions,
    ACTIVE.has(run.status) ? el("button", { id: "cancel", class: "danger", type: "button", onclick: cancel }, "Cancel") : null,
    resumable ? el("button", { id: "resume", class: "primary", type: "button", onclick: resume }, "Resume from its last checkpoint") : null,
  );
}

function renderCheckpoints() {
  const rows = page.run.checkpoints.map((c) =>
    el(
      "tr",
      { "data-step": c.step },
      el("td", { class: "num" }, number(c.step)),
      el("td", { class: "num" }, number(c.eval_loss)),
      el("td", { class: "num" }, percent(c.eval_accuracy)),
      el("td", { class: "num" }, number(c.bytes)),
      el("td", { class: "hash mono" }, c.sha256),
      el("td", {}, el("a", { href: c.url, download: c.name }, c.name)),
    ),
  );
  fill(checkpoints, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "none yet")));
}

async function renderFiles() {
  const evidence = page.run.links.evidence;
  let names = ["config.json", "provenance.json", "metrics.jsonl"];
  if (page.run.status !== "queued" && page.run.status !== "running") {
    try {
      const manifest = await api(evidence);
      names = [...manifest.files.map((f) => f.path), "manifest.json"];
    } catch (error) {
      console.warn(error); // a run whose end is still being written has no manifest yet
    }
  }
  fill(
    files,
    names.map((name) =>
      el("li", {}, el("a", { href: `${evidence}/${name}`, class: name === "report.html" ? "report-link" : null }, name)),
    ),
  );
  try {
    fill(provenance, JSON.stringify(await api(`${evidence}/provenance.json`), null, 2));
  } catch (error) {
    fill(provenance, error.message);
  }
}

/** Fold one event into the page (the run's facts as the server would show them after it). */
function onEvent(event) {
  page.events += 1;
  applyEvent(history, event);
  charts.update(history);
  const run = page.run;
  const d = event.data;
  if (d.step !== undefined) run.progress.step = Math.max(run.progress.step, d.step);
  if (event.type === "status") {
    run.status = d.status;
    if (d.status === "running" && !run.started_at) run.started_at = event.time;
    if (d.resumed_from) {
      run.progress.step = d.step;
      run.finished_at = null;
      run.error = null;
      run.checkpoints = run.checkpoints.filter((c) => c.step <= d.step);
    }
  } else if (event.type === "metric") {
    run.latest_metrics = { ...d, time: event.time };
  } else if (event.type === "checkpoint") {
    run.latest_eval = { ...d, time: event.time };
    if (!run.checkpoints.some((c) => c.name === d.name))
      run.checkpoints.push({ ...d, url: `${run.links.checkpoints}/${encodeURIComponent(d.name)}` });
    renderCheckpoints();
  }
  if (event.type === "end") {
    run.status = d.status;
    run.finished_at = event.time;
    run.error = d.error;
  }
  if (event.type !== "metric" || page.events % 10 === 0) renderFacts();
  if (event.type === "end") {
    // Nothing follows a run's end but a resume, which this page asks for itself: stop listening.
    closeStream();
    page.ended = true;
    refresh();
  }
}

function closeStream() {
  if (page.stream) page.stream.close();
  page.stream = null;
  live.textContent = "";
  live.classList.remove("on");
}

function openStream() {
  closeStream();
  page.ended = false;
  // The first stream replays from the start; after a resume, from the last event this page has.
  const after = history.lastId ? `&last_event_id=${history.lastId}` : "";
  const stream = new EventSource(`${page.run.links.events}${after}`);
  stream.addEventListener("open", () => {
    page.streamOpens += 1;
    live.textContent = "live";
    live.classList.add("on");
  });
  stream.addEventListener("error", () => {
    if (page.stream !== stream) return;
    live.textContent = stream.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting";
    live.classList.remove("on");
  });
  for (const type of ["status", "metric", "checkpoint", "end"]) {
    stream.addEventListener(type, (message) => onEvent(JSON.parse(message.data)));
  }
  page.stream = stream;
}

/** The run as the server has it now (after its end, or an action). */
async function refresh() {
  try {
    page.run = await api(`/api/training/runs/${encodeURIComponent(runId)}`);
    fill(notices);
  } catch (error) {
    if (error instanceof ApiProblem) report(error);
    else fill(notices, notice(`The server did not answer (${error.message}): this page shows what it last received. A server that restarts marks a training run interrupted; Resume continues it.`, "error"));
    renderFacts();
    return;
  }
  renderFacts();
  renderCheckpoints();
  await renderFiles();
}

async function cancel() {
  try {
    page.run = await api(page.run.links.cancel, { method: "POST" });
    renderFacts();
  } catch (error) {
    report(error);
  }
}

async function resume() {
  try {
    page.run = await api(page.run.links.resume, { method: "POST" });
  } catch (error) {
    report(error);
    return;
  }
  renderFacts();
  openStream();
}

async function main() {
  const mainEl = document.getElementById("main");
  try {
    await layout("runs");
    page.run = await api(`/api/training/runs/${encodeURIComponent(runId)}`);
  } catch (error) {
    report(error);
    return;
  }
  document.title = `${page.run.name || runId} · trainer-tinygrad`;
  fill(
    mainEl,
    notices,
    title,
    el(
      "section",
      { "data-needs-read": "" },
      facts,
      actions,
      el("h2", {}, "Training curves"),
      chartsEl,
      el("h2", {}, "Checkpoints"),
      el(
        "table",
        { id: "checkpoints" },
        el("thead", {}, el("tr", {}, ["step", "eval loss", "eval accuracy", "bytes", "sha256", "download"].map((h) => el("th", {}, h)))),
        checkpoints,
      ),
      el(
        "div",
        { class: "columns" },
        el("section", {}, el("h2", {}, "Config"), config),
        el("section", {}, el("h2", {}, "Provenance"), provenance),
      ),
      el("h2", {}, "Evidence files"),
      files,
    ),
  );
  fill(config, JSON.stringify(page.run.config, null, 2));
  charts = new RunCharts(chartsEl);
  window.dashboard.charts = charts;
  renderFacts();
  renderCheckpoints();
  renderFiles();
  // The checkpoint table is rebuilt from the events the stream replays.
  page.run.checkpoints = [];
  openStream();
  setInterval(() => {
    if (page.run && ACTIVE.has(page.run.status)) {
      const d = document.getElementById("duration");
      if (d) d.textContent = duration(page.run.started_at, page.run.finished_at);
    }
  }, 1000);
}

main();
