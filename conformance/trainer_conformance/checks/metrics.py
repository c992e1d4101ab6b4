"""Section 3: the metrics endpoint: valid pages, finite values, evaluation loss that falls."""

from __future__ import annotations

import itertools
from typing import Any

from ..expectations import expect_headers, expect_json, non_finite
from ..failures import CheckFailure
from ..registry import check
from ..session import Session

_AREA = ("schemas/metrics.schema.json", "reference_server/", "functions/trainer-tinygrad/")
#: The evaluation loss must fall over at least this many successive checkpoints.
FALLING_CHECKPOINTS = 3


@check(
    "metrics.schema",
    "Metrics pages are valid",
    "Every page of GET /api/training/runs/{run_id}/metrics (following next_after_step) answers 200 with a body "
    "valid against metrics.schema.json; steps increase across pages; the run has metrics and evals.",
    evidence="every metrics page probe",
    needs={"main"},
    area=_AREA,
)
def pages(s: Session) -> dict[str, Any]:
    main = s.run("main")
    history = s.metrics(main)
    for page in history.pages:
        body = expect_json(s.contract, page, "metrics")
        expect_headers(s.contract, page, "json")
        if body["run_id"] != main.run_id:
            raise CheckFailure("Wrong run", f"metrics for {body['run_id']}, asked {main.run_id}", [page.probe])
    steps = [m["step"] for m in history.metrics]
    probes = [p.probe for p in history.pages]
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise CheckFailure("Steps out of order", f"metric steps do not strictly increase: {steps[:20]}", probes)
    if not history.metrics or not history.evals:
        raise CheckFailure(
            "No metrics", f"{len(history.metrics)} metrics, {len(history.evals)} evals for a finished run", probes
        )
    return {"pages": len(history.pages), "metrics": len(history.metrics), "evals": len(history.evals)}


@check(
    "metrics.finite",
    "Metric values are finite",
    "Every loss, accuracy and evaluation value is a finite number, and accuracies lie in [0, 1].",
    evidence="every metrics page probe",
    needs={"main"},
    area=_AREA,
)
def finite(s: Session) -> dict[str, Any]:
    main = s.run("main")
    history = s.metrics(main)
    probes = [p.probe for p in history.pages]
    rows: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        (m, ("loss", "accuracy", "learning_rate", "samples_per_second")) for m in history.metrics
    ]
    rows += [(e, ("eval_loss", "eval_accuracy")) for e in history.evals]
    for row, keys in rows:
        for key in keys:
            value = row.get(key)
            if key in ("loss", "accuracy", "eval_loss", "eval_accuracy") and not isinstance(value, int | float):
                raise CheckFailure("Missing value", f"step {row.get('step')}: {key} is {value!r}", probes)
        if bad := non_finite(row, keys):
            raise CheckFailure("Non-finite value", f"step {row.get('step')}: {', '.join(bad)} not finite", probes)
        for key in ("accuracy", "eval_accuracy"):
            if key in row and not 0 <= row[key] <= 1:
                raise CheckFailure("Accuracy out of range", f"step {row.get('step')}: {key} = {row[key]}", probes)
    if not rows:
        raise CheckFailure("No metrics", "the metrics endpoint returned no values", probes)
    return {"values": len(rows)}


@check(
    "metrics.eval_loss_falls",
    "Evaluation loss falls over successive checkpoints",
    f"The evaluation loss strictly decreases over at least {FALLING_CHECKPOINTS} successive checkpoints, and the "
    "last checkpoint's evaluation loss is below the first's.",
    evidence="every metrics page probe; the evaluation losses in `details`",
    needs={"main"},
    area=_AREA,
)
def eval_loss_falls(s: Session) -> dict[str, Any]:
    main = s.run("main")
    history = s.metrics(main)
    probes = [p.probe for p in history.pages]
    evals = sorted(history.evals, key=lambda e: e["step"])
    losses = [float(e["eval_loss"]) for e in evals]
    if len(losses) < FALLING_CHECKPOINTS:
        raise CheckFailure(
            "Too few checkpoints", f"{len(losses)} evaluations; at least {FALLING_CHECKPOINTS} are needed", probes
        )
    longest = streak = 1
    for before, after in itertools.pairwise(losses):
        streak = streak + 1 if after < before else 1
        longest = max(longest, streak)
    figures = {"steps": [e["step"] for e in evals], "eval_losses": losses, "longest_falling": longest}
    if longest < FALLING_CHECKPOINTS:
        raise CheckFailure(
            "Evaluation loss does not fall",
            f"longest strictly falling run of checkpoints is {longest} (needs {FALLING_CHECKPOINTS}): {losses}",
            probes,
        )
    if losses[-1] >= losses[0]:
        raise CheckFailure("Evaluation loss did not improve", f"first {losses[0]}, last {losses[-1]}", probes)
    return figures
