// The runs table: listed from GET /api/training/runs (filtered by status and tag), then kept current by the
// all-runs event feed (no polling). The feed is live only, so it is opened first and the list read once it is
// open; events that arrive meanwhile are applied after the list, and a reconnect reads the list again.
import { api, layout, report, requireSignIn } from "./api.js";
import { duration, el, fill, notice, number, percent, statusBadge, tagList, time } from "./view.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"];
const ACTIVE = new Set(["queued", "running"]);
const params = new URLSearchParams(location.search);
const filter = { status: params.get("status") || "", tag: params.get("tag") || "" };
const rows = new Map(); // run_id -> {run, tr}
const selected = new Set();
const state = { loaded: false, queue: [], nextCursor: null, feedOpens: 0, feedEvents: 0 };
window.dashboard = Object.assign(window.dashboard || {}, { rows, state });

const body = el("tbody", { id: "runs-body" });
const more = el("button", { id: "more", type: "button", class: "hidden", onclick: () => load(state.nextCursor) }, "Load more");
const live = el("span", { id: "live", class: "live" }, "connecting");
const compare = el("a", { id: "compare", class: "button hidden", href: "/compare" }, "Compare selected");

function toolbar() {
  const status = el(
    "select",
    { id: "filter-status", onchange: (e) => refilter({ status: e.target.value }) },
    el("option", { value: "" }, "any"),
    STATUSES.map((s) => el("option", { value: s, selected: s === filter.status }, s)),
  );
  const tag = el("input", { id: "filter-tag", value: filter.tag, placeholder: "tag", size: 16 });
  tag.addEventListener("change", () => refilter({ tag: tag.value.trim() }));
  return el(
    "div",
    { class: "toolbar" },
    el("label", {}, "status", status),
    el("label", {}, "tag", tag),
    compare,
    el("a", { class: "button", href: "/start" }, "Start a run"),
    live,
  );
}

function refilter(change) {
  Object.assign(filter, change);
  const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
  history.replaceState(null, "", query.size ? `/?${query}` : "/");
  rows.clear();
  body.replaceChildren();
  load(null);
}

function matches(run) {
  return (!filter.status || run.status === filter.status) && (!filter.tag || run.tags.includes(filter.tag));
}

function cells(run) {
  const p = run.progress;
  const check = el("input", {
    type: "checkbox",
    checked: selected.has(run.run_id),
    "aria-label": `select ${run.run_id}`,
    onchange: (e) => {
      if (e.target.checked) selected.add(run.run_id);
      else selected.delete(run.run_id);
      const query = new URLSearchParams([...selected].map((id) => ["run", id]));
      compare.href = `/compare?${query}`;
      compare.classList.toggle("hidden", selected.size < 2);
    },
  });
  return [
    el("td", {}, check),
    el(
      "td",
      {},
      el("a", { href: `/runs/${run.run_id}`, class: "run-link" }, run.name || run.run_id),
      run.name ? el("div", { class: "muted mono" }, run.run_id) : null,
      el("div", {}, tagList(run.tags)),
    ),
    el("td", {}, run.config.model),
    el("td", {}, run.config.dataset),
    el("td", {}, statusBadge(run.status)),
    el(
      "td",
      { class: "progress" },
      el("progress", { max: p.total_steps, value: p.step }),
      ` ${p.step.toLocaleString("en-US")}/${p.total_steps.toLocaleString("en-US")}`,
    ),
    el("td", { class: "num loss" }, number(run.latest_metrics?.loss)),
    el("td", { class: "num eval" }, percent(run.latest_eval?.eval_accuracy)),
    el("td", {}, time(run.created_at)),
    el("td", { class: "num duration" }, duration(run.started_at, run.finished_at)),
  ];
}

function show(run, atTop = false) {
  if (!matches(run)) {
    rows.get(run.run_id)?.tr.remove();
    rows.delete(run.run_id);
    return;
  }
  let entry = rows.get(run.run_id);
  if (!entry) {
    entry = { run, tr: el("tr", { "data-run-id": run.run_id }) };
    rows.set(run.run_id, entry);
    if (atTop) body.prepend(entry.tr);
    else body.append(entry.tr);
  }
  entry.run = run;
  entry.tr.dataset.status = run.status;
  fill(entry.tr, cells(run));
}

async function load(cursor) {
  const query = new URLSearchParams({ limit: "50" });
  if (filter.status) query.set("status", filter.status);
  if (filter.tag) query.set("tag", filter.tag);
  if (cursor) query.set("cursor", cursor);
  try {
    const page = await api(`/api/training/runs?${query}`);
    for (const run of page.runs) show(run);
    state.nextCursor = page.next_cursor;
    more.classList.toggle("hidden", !page.next_cursor);
    if (!rows.size) body.replaceChildren(el("tr", { id: "empty" }, el("td", { colspan: 10, class: "muted" }, "No runs yet.")));
    else document.getElementById("empty")?.remove();
  } catch (error) {
    report(error);
  }
}

/** One feed event: fold it into the row it concerns (a run not listed yet is fetched). */
async function apply(event) {
  state.feedEvents += 1;
  const entry = rows.get(event.run_id);
  if (!entry || event.type === "end") {
    try {
      show(await api(`/api/training/runs/${event.run_id}`), !entry);
      document.getElementById("empty")?.remove();
    } catch (error) {
      console.warn(error);
    }
    return;
  }
  const run = structuredClone(entry.run);
  const d = event.data;
  if (event.type === "status") {
    run.status = d.status;
    if (d.status === "running" && !run.started_at) run.started_at = event.time;
    if (d.resumed_from) run.finished_at = null;
  } else if (event.type === "metric") {
    run.latest_metrics = { ...d, time: event.time };
  } else if (event.type === "checkpoint") {
    run.latest_eval = { step: d.step, eval_loss: d.eval_loss, eval_accuracy: d.eval_accuracy, time: event.time };
  }
  if (d.step !== undefined) run.progress.step = Math.max(run.progress.step, d.step);
  show(run);
}

function follow() {
  const feed = new EventSource("/api/events/training");
  feed.addEventListener("open", () => {
    state.feedOpens += 1;
    live.textContent = "live";
    live.classList.add("on");
    if (state.feedOpens > 1) {
      // A reconnect: the feed does not replay, so read the list again.
      rows.clear();
      body.replaceChildren();
    }
    state.loaded = false;
    load(null).then(async () => {
      state.loaded = true;
      for (const event of state.queue.splice(0)) await apply(event);
    });
  });
  feed.addEventListener("error", () => {
    live.textContent = "reconnecting";
    live.classList.remove("on");
  });
  for (const type of ["status", "metric", "checkpoint", "end"]) {
    feed.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      if (state.loaded) apply(event);
      else state.queue.push(event);
    });
  }
  window.dashboard.feed = feed;
}

async function main() {
  const mainEl = document.getElementById("main");
  let session;
  try {
    session = await layout("runs");
  } catch (error) {
    report(error);
    return;
  }
  const table = el(
    "table",
    { id: "runs" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["", "run", "model", "dataset", "status", "progress", "latest loss", "last eval accuracy", "created", "duration"].map(
          (h, i) => el("th", { class: i >= 6 && i !== 8 ? "num" : "" }, h),
        ),
      ),
    ),
    body,
  );
  fill(mainEl, el("h1", {}, "Runs"), el("section", { "data-needs-read": "" }, toolbar(), table, more));
  if (session.reads_protected && !session.signed_in) {
    requireSignIn();
    return;
  }
  follow();
  setInterval(() => {
    for (const { run, tr } of rows.values()) {
      if (ACTIVE.has(run.status)) tr.querySelector(".duration").textContent = duration(run.started_at, run.finished_at);
    }
  }, 1000);
}

main();
