"""Section 9 (only with --fuzz): Schemathesis generates requests from the target's own /openapi.json."""

from __future__ import annotations

from typing import Any

from ..failures import CheckFailure, CheckSkipped, TargetUnreachable
from ..fuzzing import FuzzPhase, fuzzing_available, phase_seconds, run_phase
from ..registry import check
from ..session import TERMINAL, Session

_AREA = ("schemas/openapi.json", "reference_server/")
#: Each accepted body would start a real training run: the positive phase leaves this operation out (the suite's
#: own runs exercise it), the negative phase sends it every kind of invalid body.
_STARTS_RUNS = "POST /api/training/runs"


def _phase(s: Session, mode: str, exclude: tuple[str, ...] = ()) -> tuple[FuzzPhase, list[str]]:
    if problem := fuzzing_available():
        raise CheckSkipped(problem)
    main = s.runs.get("main")
    examples = s.options.fuzz_examples
    seconds = phase_seconds(s.options.fuzz_seconds, examples)
    bound = f"{examples} examples per operation" if seconds is None else f"{seconds:g} s"
    s.progress.status("fuzz", f"Schemathesis, {mode} phase (up to {bound})", milestone=True)
    before = _run_ids(s)
    phase = run_phase(
        s.client.base_url,
        mode,
        s.folder.path(f"fuzz/{mode}"),
        run_id=main.run_id if main else None,
        seconds=seconds,
        examples=examples,
        token=s.options.token,
        exclude=exclude,
    )
    s.progress.done("fuzz")
    _cancel_new_runs(s, before)
    evidence = [f"fuzz/{mode}/{name}" for name in phase.files]
    if phase.error is not None:
        raise CheckFailure("Fuzzing did not complete", phase.error, evidence)
    if phase.tested == 0:
        raise CheckFailure("Nothing fuzzed", "Schemathesis tested no operation of /openapi.json", evidence)
    return phase, evidence


def _run_ids(s: Session) -> set[str]:
    try:
        listing = s.client.request("GET", "/api/training/runs", params={"limit": 100})
        runs = listing.json().get("runs", []) if listing.status == 200 else []
    except (TargetUnreachable, CheckFailure, AttributeError):
        return set()
    return {r["run_id"] for r in runs if isinstance(r, dict) and isinstance(r.get("run_id"), str)}


def _cancel_new_runs(s: Session, before: set[str]) -> None:
    # A schema-valid body among the negative cases starts a real run: the suite leaves the target as it found it.
    try:
        listing = s.client.request("GET", "/api/training/runs", params={"limit": 100})
        runs = listing.json().get("runs", []) if listing.status == 200 else []
    except (TargetUnreachable, CheckFailure, AttributeError):
        return
    for run in runs:
        run_id = run.get("run_id") if isinstance(run, dict) else None
        if isinstance(run_id, str) and run_id not in before and run.get("status") not in TERMINAL:
            s.extra_runs.append(run_id)
            s.client.request("POST", f"/api/training/runs/{run_id}/cancel")


def _judge(phase: FuzzPhase, evidence: list[str], title: str) -> dict[str, Any]:
    figures = {"operations_tested": phase.tested, "test_cases": phase.generated, "seconds": phase.seconds,
               "stop_reason": phase.report.get("stop_reason")}  # fmt: skip
    if phase.failures:
        first_operation, texts = next(iter(phase.failures.items()))
        raise CheckFailure(
            title,
            f"{len(phase.failures)} operation(s) failed ({', '.join(phase.failures)}); first, {first_operation}: "
            + " ".join(texts[0].split())[:600],
            evidence,
        )
    return figures


@check(
    "fuzz.positive",
    "Schema-valid requests are served as documented",
    "Schemathesis (examples, coverage and fuzzing phases, positive mode, every check, bounded by --fuzz-seconds or "
    "--fuzz-examples) sends schema-valid requests generated from the target's /openapi.json to every operation "
    f"except {_STARTS_RUNS}: each is accepted, answered without a 5xx, with a documented status, content type, "
    "headers and a body valid against the documented schema.",
    evidence="`fuzz/positive/` (Schemathesis' output, JSON report, JUnit with a reproducing request per failure, "
    "configuration)",
    needs={"main"},
    area=_AREA,
    optional=True,
)
def positive(s: Session) -> dict[str, Any]:
    phase, evidence = _phase(s, "positive", exclude=(_STARTS_RUNS,))
    return _judge(phase, evidence, "Schema-valid requests not served as documented")


@check(
    "fuzz.negative",
    "Schema-invalid requests are refused",
    "Schemathesis (negative mode, every operation, bounded by --fuzz-seconds or --fuzz-examples) sends requests "
    "that break the target's /openapi.json: each is refused with a 4xx, never answered 2xx or 5xx; any run a "
    "schema-valid variant started is cancelled.",
    evidence="`fuzz/negative/` (Schemathesis' output, JSON report, JUnit with a reproducing request per failure, "
    "configuration)",
    needs={"main"},
    area=_AREA,
    optional=True,
)
def negative(s: Session) -> dict[str, Any]:
    phase, evidence = _phase(s, "negative")
    return _judge(phase, evidence, "Schema-invalid requests not refused")
