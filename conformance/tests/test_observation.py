"""How the suite schedules what it starts: control runs only once the SSE rate window has closed, asked again when
a busy target refused them while the main run trained."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from scripted_target import Breakage, ScriptedTarget
from trainer_conformance.runner import run_suite
from trainer_conformance.session import RATE_WINDOW_S, Options


def test_control_runs_wait_for_the_rate_window_and_a_refusal_is_asked_again_after_the_main_run(
    tmp_path: Path,
) -> None:
    # About 12 s of main run (running at 0.9 s, 20 metrics and 4 checkpoints 0.45 s apart); the target refuses
    # every other run until it has ended.
    with ScriptedTarget(Breakage(busy_while_first_run=True), interval=0.45) as target:
        outcome = run_suite(Options(base_url=target.url, timeout=60), out=tmp_path, patterns=["mocks.seeds_differ"])
        main, *controls = sorted(target.runs.values(), key=lambda r: r.created)
    assert outcome.report is not None and outcome.folder is not None
    assert outcome.exit_code == 0, outcome.report["checks"]
    probes = [json.loads(line) for line in (outcome.folder / "probes" / "index.jsonl").read_text().splitlines()]
    refused = [datetime.fromisoformat(p["started_at"]).timestamp() for p in probes if p["status"] == 429]
    running_at, succeeded_at = main.due[1], main.due[-2]
    assert refused and all(running_at + RATE_WINDOW_S <= t < succeeded_at for t in refused), "tried inside the tail"
    assert len(controls) == 2 and all(c.created >= succeeded_at for c in controls), "asked again after its end"
    # Each refusal is reported. Usually both control runs are refused in the ~2-s tail; under load the second request
    # can come after the main run's end and be accepted at once (seen once under `make test`'s niced lane).
    assert sum("refused (429)" in note for note in outcome.report["notes"]) == len(refused)
