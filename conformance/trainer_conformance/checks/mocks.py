"""Section 7: mock detection. A server that fakes training (canned metrics, timestamps, streams) fails here."""

from __future__ import annotations

import math
import statistics
from datetime import datetime
from typing import Any

import numpy as np

from ..expectations import expect_json
from ..failures import CheckFailure
from ..registry import check
from ..session import RATE_EVENTS, RunObservation, Session

_AREA = ("reference_server/", "functions/trainer-tinygrad/")
#: Body timestamps vs the same response's Date header (1 s resolution, truncated): allowed difference in seconds.
DATE_SLACK_S = (-2.0, 3.0)
#: How far apart (arrival minus event time) may drift over one stream: buffering, a busy machine.
STREAM_DRIFT_S = 2.0
#: Events arriving this long after subscribing are live, not replayed from the log.
LIVE_AFTER_S = 1.0
#: The run's reported span (finished_at - created_at) minus the span the suite observed (POST sent to the poll that
#: saw the end), in seconds: the suite sees the end up to a poll interval late and after a round trip, and a server
#: may stamp created_at a little before it answers; 3 s allows two slow polls and a loaded machine.
RUN_SPAN_SLACK_S = (-1.0, 3.0)
#: With learning rate 0 the training loss may wander with the batches but not fall by more than this fraction.
ZERO_LR_MAX_DROP = 0.10
#: Two training losses closer than this are the same number (float32 losses serialised through JSON).
SAME_LOSS = {"rel_tol": 1e-7, "abs_tol": 1e-9}
#: Evaluation losses of unchanged weights on the same images agree to this (float32 sums in another order).
SAME_EVAL_LOSS = {"rel_tol": 1e-5, "abs_tol": 1e-7}


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@check(
    "mocks.clock",
    "Timestamps follow the wall clock",
    "Health `time` agrees with the same response's Date header; a run's created/finished times span what the suite "
    "observed; live SSE events carry times that advance with their arrival (no canned or replayed timestamps).",
    evidence="every probe's Date header; `sse/main.events.jsonl` (arrival and event times)",
    needs={"main"},
    area=_AREA,
)
def clock(s: Session) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    offsets = []  # local receive time minus server Date, over every response with a Date header
    for exchange in s.client.recorder.exchanges:
        date = exchange.server_date()
        if date is not None:
            offsets.append(exchange.started_wall + exchange.elapsed_s - date)
        if exchange.url.endswith(("/healthz", "/readyz")) and exchange.status == 200 and date is not None:
            body_time = _parse_time((exchange.json() or {}).get("time"))
            if body_time is None:
                continue
            gap = body_time - date
            if not DATE_SLACK_S[0] <= gap <= DATE_SLACK_S[1]:
                raise CheckFailure(
                    "Body time disagrees with Date", f"body time is {gap:+.2f} s from the Date header", [exchange.probe]
                )
    if not offsets:
        raise CheckFailure("No Date header", "no response carried a parseable Date header", [])
    date_offset = statistics.median(offsets)
    figures["local_minus_server_date_s"] = round(date_offset, 3)
    main = s.run("main")
    created, finished = (
        _parse_time((main.final or {}).get("created_at")),
        _parse_time((main.final or {}).get("finished_at")),
    )
    probe = main.polls[-1].exchange.probe if main.polls else main.create.probe
    if created is None or finished is None:
        raise CheckFailure("Run times missing", "the finished run has no created_at or finished_at", [probe])
    assert main.finished_mono is not None
    observed = main.finished_mono - main.started_mono
    reported = finished - created
    figures.update({"observed_run_s": round(observed, 3), "reported_run_s": round(reported, 3)})
    if not RUN_SPAN_SLACK_S[0] <= observed - reported <= RUN_SPAN_SLACK_S[1]:
        raise CheckFailure(
            "Run times do not match the wall clock",
            f"the run was observed for {observed:.2f} s but reports {reported:.2f} s from created_at to finished_at",
            [main.create.probe, probe],
        )
    _, stream = s.main_stream()
    live = [
        (e.arrival_wall - t, e)
        for e in stream.events
        if e.arrival_s >= LIVE_AFTER_S and (t := _parse_time((e.payload or {}).get("time"))) is not None
    ]
    if len(live) >= 3:
        lags = [lag for lag, _ in live]
        drift = max(lags) - min(lags)
        figures.update({"live_events": len(live), "stream_drift_s": round(drift, 3)})
        evidence = [f"sse/{stream.name}.events.jsonl"]
        if drift > STREAM_DRIFT_S:
            raise CheckFailure(
                "Event times do not advance with arrival",
                f"arrival minus event time varies by {drift:.2f} s over {len(live)} live events (allowed "
                f"{STREAM_DRIFT_S} s)",
                evidence,
            )
        lag = statistics.median(lags)
        if abs(lag - date_offset) > DATE_SLACK_S[1]:
            raise CheckFailure(
                "Event times disagree with the server clock",
                f"live events arrive {lag:.2f} s after their timestamps, but the Date header is {date_offset:.2f} s "
                "behind the suite's clock",
                evidence,
            )
    return figures


@check(
    "mocks.polls_differ",
    "A running run changes between polls",
    "Among the status polls taken while the main run was running, at least two differ in progress or latest "
    "metrics (the status is not a frozen document).",
    evidence="the status-poll probes",
    needs={"main"},
    area=_AREA,
)
def polls_differ(s: Session) -> dict[str, Any]:
    main = s.run("main", finished=False)
    running = [p for p in main.polls if p.status == "running" and p.body is not None]
    if len(running) < 2:
        raise CheckFailure(
            "Run not observed running",
            f"{len(running)} poll(s) saw the run running; two are needed",
            [p.exchange.probe for p in main.polls[:3]],
        )
    states = {repr((p.body.get("progress"), p.body.get("latest_metrics"))) for p in running if p.body}
    if len(states) < 2:
        raise CheckFailure(
            "Polls identical",
            f"{len(running)} polls of the running run were all the same",
            [running[0].exchange.probe, running[-1].exchange.probe],
        )
    return {"running_polls": len(running), "distinct_states": len(states)}


def _control(s: Session, role: str) -> RunObservation:
    run = s.run(role)
    if run.status != "succeeded":
        raise CheckFailure(
            "Control run failed",
            f"the {role} control run ended {run.status}: {(run.final or {}).get('error')}",
            [run.polls[-1].exchange.probe if run.polls else run.create.probe],
        )
    return run


@check(
    "mocks.seeds_differ",
    "Another seed gives other losses",
    "A small control run with seed 1 reports, at every step it shares with the main run, a training loss different "
    "from the main run's (canned metrics repeat themselves).",
    evidence="the metrics pages of the main and `seed` runs",
    needs={"main", "controls"},
    area=_AREA,
)
def seeds_differ(s: Session) -> dict[str, Any]:
    main, control = s.run("main"), _control(s, "seed")
    if control.config.get("seed") == main.config.get("seed"):
        raise CheckFailure(
            "Seed ignored", f"both runs resolved seed {control.config.get('seed')}", [control.create.probe]
        )
    ours = {m["step"]: m["loss"] for m in s.metrics(main).metrics}
    theirs = {m["step"]: m["loss"] for m in s.metrics(control).metrics}
    common = sorted(set(ours) & set(theirs))
    evidence = [p.probe for p in s.metrics(main).pages + s.metrics(control).pages]
    if not common:
        raise CheckFailure("Nothing to compare", "the control run shares no logged step with the main run", evidence)
    same = [step for step in common if math.isclose(ours[step], theirs[step], **SAME_LOSS)]
    if same:
        raise CheckFailure(
            "Same losses for another seed",
            f"seeds {main.config.get('seed')} and 1 give equal losses at steps {same}",
            evidence,
        )
    return {"compared_steps": common, "control_run": control.run_id}


@check(
    "mocks.zero_learning_rate",
    "Learning rate 0 learns nothing",
    "A small MLP control run with learning_rate 0 keeps its weights: all its checkpoints hold identical model "
    "tensors, its evaluation losses are equal, and its training loss does not fall.",
    evidence="`checkpoints/zero_lr-<run_id>/`; its metrics pages",
    needs={"main", "controls"},
    area=_AREA,
)
def zero_learning_rate(s: Session) -> dict[str, Any]:
    run = _control(s, "zero_lr")
    history = s.metrics(run)
    evidence = [p.probe for p in history.pages]
    if run.config.get("learning_rate") != 0:
        raise CheckFailure("Learning rate ignored", f"resolved {run.config.get('learning_rate')}", [run.create.probe])
    loaded = [got for _, got in s.checkpoint_downloads(run)]
    if len(loaded) < 2 or any(got.checkpoint is None for got in loaded):
        raise CheckFailure(
            "Control checkpoints unusable",
            f"{len(loaded)} checkpoints, errors {[g.error for g in loaded]}",
            [g.path for g in loaded] or evidence,
        )
    first = loaded[0].checkpoint.model_tensors()  # type: ignore[union-attr]
    for got in loaded[1:]:
        other = got.checkpoint.model_tensors()  # type: ignore[union-attr]
        if set(other) != set(first) or any(not np.array_equal(first[k], other[k]) for k in first):
            raise CheckFailure(
                "Weights changed with learning rate 0",
                f"{got.name} differs from {loaded[0].name}",
                [loaded[0].path, got.path],
            )
    evals = [float(e["eval_loss"]) for e in sorted(history.evals, key=lambda e: e["step"])]
    if len(evals) < 2 or not all(math.isclose(v, evals[0], **SAME_EVAL_LOSS) for v in evals):
        raise CheckFailure("Evaluation loss moved", f"eval losses {evals} with unchanged weights", evidence)
    losses = [float(m["loss"]) for m in history.metrics]
    if len(losses) < 2:
        raise CheckFailure("Too few metrics", f"{len(losses)} training losses logged", evidence)
    half = len(losses) // 2
    early, late = statistics.fmean(losses[:half]), statistics.fmean(losses[half:])
    if late < early * (1 - ZERO_LR_MAX_DROP):
        raise CheckFailure(
            "Loss fell with learning rate 0", f"mean training loss {early:.4f} (first half) -> {late:.4f}", evidence
        )
    return {"control_run": run.run_id, "eval_losses": evals, "early_loss": early, "late_loss": late}


@check(
    "mocks.run_ids_unique",
    "Run ids are unique",
    "Every run the suite started got its own run id, and GET /api/training/runs (valid against "
    "run-list.schema.json) lists no id twice.",
    evidence="the create probes; the run list probe",
    needs={"main"},
    area=_AREA,
    all_runs=True,
)
def run_ids_unique(s: Session) -> dict[str, Any]:
    ids = [r.run_id for r in s.runs.values() if r.run_id]
    probes = [r.create.probe for r in s.runs.values()]
    if len(set(ids)) != len(ids):
        raise CheckFailure("Run id reused", f"the runs the suite started got ids {ids}", probes)
    listing = s.client.request("GET", "/api/training/runs")
    body = expect_json(s.contract, listing, "run-list")
    listed = [r["run_id"] for r in body["runs"]]
    if len(set(listed)) != len(listed):
        raise CheckFailure("Run listed twice", f"GET /api/training/runs lists {listed}", [listing.probe])
    return {"started": ids, "listed": len(listed)}


@check(
    "mocks.sse_new_state",
    "The stream is not padding",
    f"No event on the main run's stream repeats a state already sent (same metric or checkpoint step, same status), "
    f"and the stream carries at least {RATE_EVENTS} events with new training state; heartbeat comments are allowed "
    "but count for nothing.",
    evidence="`sse/main.events.jsonl`, `sse/main.raw`",
    needs={"main"},
    area=("reference_server/",),
)
def sse_new_state(s: Session) -> dict[str, Any]:
    _, stream = s.main_stream()
    seen: set[tuple[str, Any]] = set()
    repeats = []
    for event in stream.events:
        key = event.state_key
        if key is None or key in seen:
            repeats.append(event.sse.id)
        elif key is not None:
            seen.add(key)
    evidence = [f"sse/{stream.name}.events.jsonl", f"sse/{stream.name}.raw"]
    figures = {"events": len(stream.events), "new_state": len(seen), "comments": len(stream.comments)}
    if repeats:
        raise CheckFailure(
            "Repeated or empty states",
            f"{len(repeats)} of {len(stream.events)} events carry no new training state (ids {repeats[:10]})",
            evidence,
        )
    if len(seen) < RATE_EVENTS:
        raise CheckFailure("Stream carries too little", f"only {len(seen)} events with new training state", evidence)
    return figures
