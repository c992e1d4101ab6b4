// Several runs' curves overlaid: the runs named by ?run=... (picked in the runs table), each read from its metrics
// endpoint (the same folded view the run's page draws), one series per run.
import { api, layout, report } from "./api.js";
import { LiveChart } from "./charts.js";
import { el, fill, number, percent, statusBadge } from "./view.js";

const CHARTS = [
  ["train-loss", "Train loss", (m) => m.metrics.map((p) => [p.step, p.loss])],
  ["eval-loss", "Eval loss", (m) => m.evals.map((e) => [e.step, e.eval_loss])],
  ["train-accuracy", "Train accuracy", (m) => m.metrics.map((p) => [p.step, p.accuracy])],
  ["eval-accuracy", "Eval accuracy", (m) => m.evals.map((e) => [e.step, e.eval_accuracy])],
];

/** Every metric and eval of a run (the endpoint pages by step). */
async function history(run) {
  const out = { metrics: [], evals: [] };
  let after = null;
  do {
    const query = new URLSearchParams({ limit: "1000" });
    if (after !== null) query.set("after_step", after);
    const page = await api(`${run.links.metrics}?${query}`);
    out.metrics.push(...page.metrics);
    out.evals.push(...page.evals);
    after = page.next_after_step;
  } while (after !== null);
  return out;
}

async function main() {
  const mainEl = document.getElementById("main");
  const ids = [...new Set(new URLSearchParams(location.search).getAll("run"))];
  try {
    await layout("compare");
  } catch (error) {
    report(error);
    return;
  }
  if (ids.length === 0) {
    fill(mainEl, el("h1", {}, "Compare runs"), el("p", {}, "Pick two or more runs in the ", el("a", { href: "/" }, "runs table"), " and press Compare selected."));
    return;
  }
  let runs;
  try {
    runs = await Promise.all(ids.map((id) => api(`/api/training/runs/${encodeURIComponent(id)}`)));
  } catch (error) {
    report(error);
    return;
  }
  const histories = await Promise.all(runs.map(history));
  const labels = runs.map((r) => r.name || r.run_id);
  const table = el(
    "table",
    { id: "compared" },
    el("thead", {}, el("tr", {}, ["run", "status", "model", "dataset", "steps", "batch", "learning rate", "last loss", "last eval accuracy"].map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      runs.map((r) =>
        el(
          "tr",
          { "data-run-id": r.run_id },
          el("td", {}, el("a", { href: `/runs/${r.run_id}` }, r.name || r.run_id)),
          el("td", {}, statusBadge(r.status)),
          el("td", {}, r.config.model),
          el("td", {}, r.config.dataset),
          el("td", { class: "num" }, number(r.progress.step)),
          el("td", { class: "num" }, number(r.config.batch_size)),
          el("td", { class: "num" }, number(r.config.learning_rate)),
          el("td", { class: "num" }, number(r.latest_metrics?.loss)),
          el("td", { class: "num" }, percent(r.latest_eval?.eval_accuracy)),
        ),
      ),
    ),
  );
  const grid = el("div", { class: "charts", id: "charts" });
  fill(mainEl, el("h1", {}, `Compare ${runs.length} runs`), el("section", { "data-needs-read": "" }, table, el("h2", {}, "Curves"), grid));
  const charts = {};
  for (const [key, title, from] of CHARTS) {
    const element = el("div", { class: "chart", "data-chart": key });
    grid.append(element);
    charts[key] = new LiveChart(element, title, labels);
    charts[key].show(histories.map(from));
  }
  window.dashboard = Object.assign(window.dashboard || {}, { charts, runs });
}

main();
