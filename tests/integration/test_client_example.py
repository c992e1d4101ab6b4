"""The README's Python client example, run as written against a real reference server (only its URL changes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conformance_harness import RunningServer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("client-example")]

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- client example: tests/integration/test_client_example.py runs this block"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None, "the README's client example block is missing"
    return block.group(1)


def test_the_example_is_ten_lines_of_python() -> None:
    lines = [line for line in readme_example().splitlines() if line.strip()]
    assert len(lines) <= 10, lines


def test_the_readme_client_example_trains_streams_and_loads_a_checkpoint(reference_server: RunningServer) -> None:
    code = readme_example().replace("http://127.0.0.1:8080", reference_server.url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    metrics = [line.split() for line in lines[:-1]]
    assert len(metrics) >= 10 and all(len(m) == 2 and m[0].isdigit() and float(m[1]) > 0 for m in metrics), lines
    steps = [int(m[0]) for m in metrics]
    assert steps == sorted(set(steps)) and steps[-1] == 200, "every logged step once, in order, to the last"
    assert lines[-1].startswith("succeeded {") and "'model." in lines[-1], lines[-1]
