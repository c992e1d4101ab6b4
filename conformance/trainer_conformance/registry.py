"""Checks are plain functions registered with a stable id, a title and the requirement they enforce.

A check takes the Session, returns a dict of details (figures worth keeping in the report) or None, and raises
CheckFailure when the target does not conform or CheckSkipped when the check does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

CheckFunction = Callable[["Session"], dict[str, Any] | None]

#: Section number and name, as in the issue and the README's check table.
SECTIONS = {
    "health": 1,
    "runs": 2,
    "metrics": 3,
    "sse": 4,
    "checkpoints": 5,
    "evidence": 6,
    "mocks": 7,
    "errors": 8,
}
#: What a check may need observed before it runs: the main run (and its SSE stream), the control runs, or a
#: reconnection to the main run's stream with Last-Event-ID.
NEEDS = frozenset({"main", "controls", "replay"})


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

    @property
    def section(self) -> str:
        """The section name: the id's first part."""
        return self.id.split(".", 1)[0]


CHECKS: list[Check] = []
#: Ids that changed, old -> new: `--check OLD` still selects the check. A header check moved to its section.
RENAMED = {"mocks.request_id_echo": "health.request_id_echo"}


def check(
    id: str,
    title: str,
    requirement: str,
    *,
    needs: Iterable[str] = (),
    area: Iterable[str] = (),
    last: bool = False,
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
        CHECKS.append(Check(id, title, requirement, func, needed, tuple(area), last))
        return func

    return register


def select(patterns: Iterable[str] = ()) -> list[Check]:
    """The checks whose id equals a pattern or starts with `pattern.`; all checks when no pattern is given."""
    wanted = [RENAMED.get(p.rstrip("."), p.rstrip(".")) for p in patterns]
    chosen = [c for c in CHECKS if not wanted or any(c.id == p or c.id.startswith(p + ".") for p in wanted)]
    if wanted and not chosen:
        raise KeyError(f"no check matches {', '.join(wanted)}")
    return sorted(chosen, key=lambda c: (c.last, SECTIONS[c.section]))
