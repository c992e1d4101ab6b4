"""Checks are plain functions registered with a stable id, a title, the requirement they enforce and the evidence
they keep.

A check takes the Session, returns a dict of details (figures worth keeping in the report) or None, and raises
CheckFailure when the target does not conform or CheckSkipped when the check does not apply. The registry is the one
source of the checks table in docs/conformance.md (`trainer-conformance list --markdown`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

CheckFunction = Callable[["Session"], dict[str, Any] | None]

#: Section number and name: the order of the report and of the checks table.
SECTIONS = {
    "health": 1,
    "runs": 2,
    "metrics": 3,
    "sse": 4,
    "checkpoints": 5,
    "evidence": 6,
    "mocks": 7,
    "errors": 8,
    "fuzz": 9,
}
#: What a check may need observed before it runs: the main run (and its SSE stream), the control runs, or a
#: reconnection to the main run's stream with Last-Event-ID.
NEEDS = frozenset({"main", "controls", "replay"})
#: The markers around the generated table in docs/conformance.md.
TABLE_BEGIN = "<!-- checks table: generated from the registry by `trainer-conformance list --markdown`; do not edit -->"
TABLE_END = "<!-- end of checks table -->"


@dataclass(frozen=True)
class Check:
    """One registered check."""

    id: str
    title: str
    requirement: str
    func: CheckFunction
    needs: frozenset[str]
    #: Source paths whose CODEOWNERS answer for a failure (the contract file, the reference implementation).
    area: tuple[str, ...]
    #: Runs after every other check (it judges what the others recorded).
    last: bool = False
    required: bool = True
    #: Judges every run the suite started, so it waits for the control runs to end.
    all_runs: bool = False
    #: What the verification folder keeps for a reader to re-check the verdict.
    evidence: str = ""
    #: Runs only when asked for (`--fuzz`, or its id or section given to --check).
    optional: bool = False

    @property
    def section(self) -> str:
        """The section name: the id's first part."""
        return self.id.split(".", 1)[0]

    @property
    def waits_for_controls(self) -> bool:
        """True when the check runs only once the control runs have ended: it judges them (or every run), or it is
        an optional family heavy enough on the target to disturb them (fuzzing)."""
        return self.all_runs or "controls" in self.needs or self.optional


CHECKS: list[Check] = []
#: Ids that changed, old -> new: `--check OLD` still selects the check. A header check moved to its section.
RENAMED = {"mocks.request_id_echo": "health.request_id_echo"}


def check(
    id: str,
    title: str,
    requirement: str,
    *,
    evidence: str,
    needs: Iterable[str] = (),
    area: Iterable[str] = (),
    last: bool = False,
    all_runs: bool = False,
    optional: bool = False,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register the decorated function as a check."""
    needed = frozenset(needs)
    if unknown := needed - NEEDS:
        raise ValueError(f"{id}: unknown needs {sorted(unknown)}")
    if id.split(".", 1)[0] not in SECTIONS:
        raise ValueError(f"{id}: section must be one of {sorted(SECTIONS)}")

    def register(func: CheckFunction) -> CheckFunction:
        if any(c.id == id for c in CHECKS):
            raise ValueError(f"check id {id} registered twice")
        CHECKS.append(
            Check(id, title, requirement, func, needed, tuple(area), last, all_runs=all_runs, evidence=evidence,
                  optional=optional)
        )  # fmt: skip
        return func

    return register


def select(patterns: Iterable[str] = (), *, include_optional: bool = False) -> list[Check]:
    """The checks whose id equals a pattern or starts with `pattern.`; every check when no pattern is given.

    Optional checks come only with `include_optional` or when a pattern names them.
    """
    wanted = [RENAMED.get(p.rstrip("."), p.rstrip(".")) for p in patterns]

    def named(c: Check) -> bool:
        return any(c.id == p or c.id.startswith(p + ".") for p in wanted)

    chosen = [c for c in CHECKS if (named(c) if wanted else True) and (not c.optional or include_optional or named(c))]
    if wanted and not chosen:
        raise KeyError(f"no check matches {', '.join(wanted)}")
    return sorted(chosen, key=lambda c: (c.last, SECTIONS[c.section]))


def checks_table() -> str:
    """The Markdown table of every check (docs/conformance.md), in report order, between its markers."""
    from . import checks as _checks  # noqa: F401  (registers every check)

    rows = [
        "| id | title | requirement | evidence kept |",
        "|---|---|---|---|",
    ]
    for c in sorted(CHECKS, key=lambda c: (SECTIONS[c.section], c.last)):
        requirement = c.requirement + (" *(Only with `--fuzz`.)*" if c.optional else "")
        rows.append(f"| `{c.id}` | {c.title} | {_cell(requirement)} | {_cell(c.evidence)} |")
    return "\n".join([TABLE_BEGIN, "", *rows, "", TABLE_END]) + "\n"


def replace_table(text: str) -> str:
    """`text` (a Markdown document) with the block between the table markers replaced by `checks_table()`."""
    begin, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"no checks-table markers ({TABLE_BEGIN!r} ... {TABLE_END!r})")
    return text[:begin] + checks_table() + text[end + len(TABLE_END) :].removeprefix("\n")


def update_table(path: Path) -> bool:
    """Rewrite the checks table in `path`; True when it changed."""
    before = path.read_text()
    after = replace_table(before)
    if after != before:
        path.write_text(after)
    return after != before


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
