// A run's events folded into chart series, and drawn with uPlot (the global the vendored uPlot.iife.min.js sets).
// The fold is lifecycle.Run.apply's: a resume drops the points logged after the checkpoint it continues from, since
// the resumed attempt logs those steps again. report.html inlines this file, so the dashboard and the evidence
// report plot the same points from the same events.

/** An empty history: train metrics and evaluations, each in step order. */
export function newHistory() {
  return { metrics: [], evals: [], lastId: 0, problems: [] };
}

/** Fold one event into a history. Ids must run 1, 2, 3...: a repeat or a gap is recorded (and logged), not hidden. */
export function applyEvent(history, event) {
  if (event.id !== history.lastId + 1) {
    const problem = `run ${event.run_id}: event ${event.id} after ${history.lastId}`;
    history.problems.push(problem);
    console.error(`event stream out of order: ${problem}`);
  }
  history.lastId = Math.max(history.lastId, event.id);
  const d = event.data;
  if (event.type === "status" && d.resumed_from) {
    history.metrics = history.metrics.filter((m) => m.step <= d.step);
    history.evals = history.evals.filter((e) => e.step <= d.step);
  } else if (event.type === "metric") {
    history.metrics.push({
      step: d.step,
      loss: d.loss,
      accuracy: d.accuracy,
      samples_per_second: d.samples_per_second ?? null,
    });
  } else if (event.type === "checkpoint") {
    history.evals.push({ step: d.step, eval_loss: d.eval_loss, eval_accuracy: d.eval_accuracy });
  }
}

/** Columns aligned on the union of steps, null where a series has no point (uPlot's data layout). */
function align(columns) {
  const steps = [...new Set(columns.flatMap((c) => c.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(steps.map((s, i) => [s, i]));
  const out = [steps];
  for (const c of columns) {
    const ys = new Array(steps.length).fill(null);
    for (const [x, y] of c.points) ys[index.get(x)] = y;
    out.push(ys);
  }
  return out;
}

const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d"];

/** The three charts of one run: what each plots from a history. */
export const RUN_CHARTS = [
  {
    key: "loss",
    title: "Loss",
    series: [
      { label: "train loss", from: (h) => h.metrics.map((m) => [m.step, m.loss]) },
      { label: "eval loss", from: (h) => h.evals.map((e) => [e.step, e.eval_loss]), dash: true },
    ],
  },
  {
    key: "accuracy",
    title: "Accuracy",
    series: [
      { label: "train accuracy", from: (h) => h.metrics.map((m) => [m.step, m.accuracy]) },
      { label: "eval accuracy", from: (h) => h.evals.map((e) => [e.step, e.eval_accuracy]), dash: true },
    ],
  },
  {
    key: "throughput",
    title: "Samples per second",
    series: [
      {
        label: "samples/s",
        from: (h) => h.metrics.filter((m) => m.samples_per_second !== null).map((m) => [m.step, m.samples_per_second]),
      },
    ],
  },
];

function options(title, labels, width, dashes) {
  return {
    title,
    width,
    height: 240,
    scales: { x: { time: false } },
    axes: [{ label: "step" }, { size: 64 }],
    series: [
      { label: "step" },
      ...labels.map((label, i) => ({
        label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        spanGaps: true,
        dash: dashes[i] ? [6, 4] : undefined,
        points: { show: false },
      })),
    ],
  };
}

/** A chart that redraws at most once per animation frame however many points arrive (a replay brings thousands). */
export class LiveChart {
  constructor(element, title, labels, dashes = []) {
    this.element = element;
    this.labels = labels;
    this.pending = null;
    const width = Math.max(element.clientWidth || 0, 320);
    this.plot = new uPlot(options(title, labels, width, dashes), [[], ...labels.map(() => [])], element);
    this.resizer = new ResizeObserver(() => this.plot.setSize({ width: Math.max(element.clientWidth, 320), height: 240 }));
    this.resizer.observe(element);
  }

  /** Plot these series (one list of [step, value] per label). */
  show(columns) {
    const first = this.pending === null;
    this.pending = columns;
    if (first) requestAnimationFrame(() => this.flush());
  }

  /** Draw what is pending now. */
  flush() {
    if (this.pending === null) return;
    this.plot.setData(align(this.pending.map((points) => ({ points }))));
    this.pending = null;
  }

  /** The points drawn, per series, as [step, value] pairs (what the browser tests compare with metrics.jsonl). */
  points() {
    this.flush();
    const [xs, ...ys] = this.plot.data;
    return ys.map((col) => xs.flatMap((x, i) => (col[i] === null || col[i] === undefined ? [] : [[x, col[i]]])));
  }
}

/** The run charts in `container` (one div each), redrawn from a history by `update`. */
export class RunCharts {
  constructor(container) {
    this.charts = {};
    for (const spec of RUN_CHARTS) {
      const element = document.createElement("div");
      element.className = "chart";
      element.dataset.chart = spec.key;
      container.append(element);
      this.charts[spec.key] = new LiveChart(
        element,
        spec.title,
        spec.series.map((s) => s.label),
        spec.series.map((s) => Boolean(s.dash)),
      );
    }
  }

  update(history) {
    for (const spec of RUN_CHARTS) this.charts[spec.key].show(spec.series.map((s) => s.from(history)));
  }

  /** Every chart's drawn points by chart key. */
  points() {
    return Object.fromEntries(Object.entries(this.charts).map(([k, c]) => [k, c.points()]));
  }
}
