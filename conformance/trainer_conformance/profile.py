"""Stage profiles: the markers a target of one project phase shows (`X-Phase`, `X-Mocks`, the health body's
`phase` and `mocks`) and where its verification folders go, read from one data file, `profiles.json`.

The contract in `schemas/` states the current phase's markers; a profile replaces exactly those values, so another
phase is verified by adding a profile, without editing code or the schemas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "stage1"
_FILE = Path(__file__).resolve().parent / "profiles.json"


@dataclass(frozen=True)
class Profile:
    """One named profile from profiles.json."""

    name: str
    description: str
    #: Exact header values every response carries.
    headers: dict[str, str]
    #: Fields with fixed values in the /healthz and /readyz bodies.
    health: dict[str, Any]
    #: Verification folders go to `<evidence root>/<verify_dir>/<commit>/`.
    verify_dir: str


def profile_names() -> list[str]:
    """Every profile the data file defines."""
    return sorted(k for k in _document() if not k.startswith("$"))


@cache
def load_profile(name: str = DEFAULT_PROFILE) -> Profile:
    """The profile `name`; KeyError naming the known ones when there is none."""
    document = _document()
    if name.startswith("$") or name not in document:
        raise KeyError(f"no profile {name!r} (known: {', '.join(profile_names())})")
    entry = document[name]
    return Profile(name, entry["description"], dict(entry["headers"]), dict(entry["health"]), entry["verify_dir"])


@cache
def _document() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_FILE.read_text())
    return value
