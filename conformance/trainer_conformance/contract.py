"""The contract the suite enforces: the JSON Schemas and the header table in `schemas/`.

The schemas are read from the copy shipped inside the package (wheel installs) or, in a source checkout, from the
repository's `schemas/` folder, which is the only place they are edited.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .profile import DEFAULT_PROFILE, Profile, load_profile

_PACKAGE = Path(__file__).resolve().parent


def schemas_dir() -> Path:
    """The folder holding the contract: the packaged copy when present, else the source checkout's `schemas/`."""
    shipped = _PACKAGE / "schemas"
    if shipped.is_dir():
        return shipped
    source = _PACKAGE.parents[1] / "schemas"
    if source.is_dir():
        return source
    raise FileNotFoundError(f"no schemas: neither {shipped} nor {source} exists (reinstall trainer-conformance)")


class Contract:
    """Validators for every schema in the folder and the response-header table (`headers.json`), with a stage
    profile's markers in place of the ones the files state (none: the files as written)."""

    def __init__(self, folder: Path | None = None, profile: Profile | None = None) -> None:
        self.folder = folder or schemas_dir()
        self.profile = profile
        self.schemas: dict[str, dict[str, Any]] = {}
        for path in sorted(self.folder.glob("*.schema.json")):
            self.schemas[path.name] = json.loads(path.read_text())
        self.headers: dict[str, Any] = json.loads((self.folder / "headers.json").read_text())
        if profile is not None:
            self._apply(profile)
        resources = [
            (schema.get("$id", name), Resource.from_contents(schema, DRAFT202012))
            for name, schema in self.schemas.items()
        ]
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}

    def _apply(self, profile: Profile) -> None:
        self.headers["all"].update(profile.headers)
        health = copy.deepcopy(self.schemas["health.schema.json"])
        for field, value in profile.health.items():
            health["properties"][field] = {"const": value}
        self.schemas["health.schema.json"] = health

    def validator(self, name: str) -> Draft202012Validator:
        """A validator for `name` (`health` or `health.schema.json`), formats checked."""
        filename = name if name.endswith(".json") else f"{name}.schema.json"
        if filename not in self._validators:
            if filename not in self.schemas:
                raise KeyError(f"no schema {filename} in {self.folder}")
            self._validators[filename] = Draft202012Validator(
                self.schemas[filename], registry=self.registry, format_checker=FormatChecker()
            )
        return self._validators[filename]

    def problems(self, name: str, instance: Any) -> list[str]:
        """Every way `instance` breaks schema `name`, as `path: message` lines (empty when valid)."""
        errors = sorted(self.validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]

    def header_problems(self, kind: str, headers: Mapping[str, str]) -> list[str]:
        """Headers missing or wrong for a response of `kind` (`json`, `problem`, `sse`, `checkpoint`), plus `all`."""
        lowered = {k.lower(): v for k, v in headers.items()}
        found = []
        for block in ("all", kind):
            for name, rule in self.headers.get(block, {}).items():
                value = lowered.get(name.lower())
                if value is None:
                    found.append(f"{name} missing")
                elif not _header_matches(rule, value):
                    found.append(f"{name}: {value!r} does not match {rule!r}")
        return found


def _header_matches(rule: Any, value: str) -> bool:
    if isinstance(rule, str):
        return value == rule
    if "pattern" in rule:
        return re.fullmatch(rule["pattern"], value) is not None
    if "startswith" in rule:
        return value.startswith(rule["startswith"])
    return False


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


@cache
def default_contract(profile: str = DEFAULT_PROFILE) -> Contract:
    """The contract from the default schemas folder with `profile`'s markers, loaded once per process."""
    return Contract(profile=load_profile(profile))
