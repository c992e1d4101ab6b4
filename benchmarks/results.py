"""A benchmark's report: rows for a table, notes, raw details; saved as JSON plus a Markdown table.

`benchmarks/results/<name>.json` holds everything measured (machine, options, every repeat); `<name>.md` the table a
reader sees; `summary.md` every table found in the folder, in suite order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainer_tinygrad.files import write_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def utc_now() -> str:
    """RFC 3339 UTC with a `Z`, second precision."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Report:
    """What one benchmark measured. `status`: ok, partial (some parts could not run), skipped or failed."""

    name: str
    title: str
    columns: list[tuple[str, str]]  # (row key, header)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"

    def to_json(self, *, machine: dict[str, Any], options: dict[str, Any], started_at: str) -> dict[str, Any]:
        """The JSON document written to `<name>.json`."""
        return {
            "benchmark": self.name,
            "title": self.title,
            "status": self.status,
            "started_at": started_at,
            "finished_at": utc_now(),
            "machine": machine,
            "options": options,
            "columns": [{"key": k, "header": h} for k, h in self.columns],
            "rows": self.rows,
            "notes": self.notes,
            "details": self.details,
        }


def fmt(value: Any) -> str:
    """A cell: thousands separators for big numbers, 3 significant digits for small ones, `-` for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def markdown_table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub Markdown table of `rows` under `columns`."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """A saved report as Markdown: heading, table, notes."""
    columns = [(c["key"], c["header"]) for c in doc["columns"]]
    status = "" if doc["status"] == "ok" else f" ({doc['status']})"
    parts = [f"### {doc['title']}{status}", "", f"`{doc['benchmark']}`, {doc['finished_at']}", ""]
    if doc["rows"]:
        parts += [markdown_table(columns, doc["rows"]), ""]
    parts += [f"- {note}" for note in doc["notes"]]
    return "\n".join(parts).rstrip() + "\n"


def save(doc: dict[str, Any], out_dir: Path) -> Path:
    """Write `<name>.json` and `<name>.md`; returns the JSON path."""
    path = out_dir / f"{doc['benchmark']}.json"
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    write_atomic(out_dir / f"{doc['benchmark']}.md", markdown(doc).encode("utf-8"))
    return path


def write_summary(out_dir: Path, order: Sequence[str], machine: dict[str, Any]) -> Path:
    """`summary.md`: the machine, then every saved benchmark's table in suite order."""
    docs = []
    for name in order:
        path = out_dir / f"{name}.json"
        if path.is_file():
            docs.append(json.loads(path.read_text(encoding="utf-8")))
    head = [
        "# Benchmark results",
        "",
        f"Machine: {machine.get('summary', '?')}. Regenerated {utc_now()} by `python -m benchmarks`; "
        "each table says when it was measured.",
        "",
    ]
    text = "\n".join(head) + "\n".join(markdown(d) + "\n" for d in docs)
    path = out_dir / "summary.md"
    write_atomic(path, text.encode("utf-8"))
    return path
