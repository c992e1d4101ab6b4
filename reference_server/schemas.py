"""The contract in `schemas/`, loaded once: validators for requests and for every evidence write, and the bundled
OpenAPI document the server publishes at /openapi.json. Validation is JSON Schema 2020-12 with strict integers
(`trainer_tinygrad.schema`): `"steps": 50.0` is refused as a request, not accepted and then failed in the trainer."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from trainer_tinygrad.schema import StrictValidator, schemas_dir

#: Base URI of every schema's $id; refs between files are relative to it.
BASE_URI = "https://trainer-tinygrad.dev/schemas/"
_SUFFIX = ".schema.json"


class Contract:
    """Every `*.schema.json` by file name, a `referencing` registry over them, and cached validators."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or schemas_dir()
        self.documents: dict[str, dict[str, Any]] = {}
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            self.documents[path.name] = json.loads(path.read_text(encoding="utf-8"))
        resources = [
            (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012))
            for doc in self.documents.values()
        ]
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self._validators: dict[str, Any] = {}

    def validator(self, name: str) -> Any:
        """A validator for `name` (a file name such as ``run.schema.json``) with date-time formats checked."""
        if name not in self._validators:
            self._validators[name] = StrictValidator(
                self.documents[name], registry=self.registry, format_checker=FormatChecker()
            )
        return self._validators[name]

    def errors(self, name: str, instance: Any) -> list[ValidationError]:
        """Every violation of schema `name` by `instance`, most specific first (empty when valid)."""
        return sorted(self.validator(name).iter_errors(instance), key=lambda e: (list(e.path), e.message))

    def check(self, name: str, instance: Any) -> None:
        """Raise `ContractViolation` when `instance` does not match schema `name` (for the server's own output)."""
        errors = self.errors(name, instance)
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(root)"
            raise ContractViolation(f"{name}: {where}: {first.message}")

    def openapi(self) -> dict[str, Any]:
        """schemas/openapi.json with every schema file embedded under components.schemas and each `$ref` rewritten
        to point inside the one document, so a client needs nothing else. Each `$defs` entry of a schema file
        becomes a component of its own (`common.timestamp`): code generators follow refs to components and drop
        refs into a component's `$defs`."""
        return _bundle(json.loads((self.directory / "openapi.json").read_text(encoding="utf-8")), self.documents)


class ContractViolation(Exception):
    """The server was about to write or send something its own contract forbids: a bug, never the client's."""


def field_errors(errors: list[ValidationError]) -> list[dict[str, str]]:
    """Turn jsonschema errors into problem+json `errors` items, naming the offending field."""
    out: list[dict[str, str]] = []
    for error in errors:
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            allowed = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - allowed):
                field = f"{path}.{extra}" if path else str(extra)
                out.append({"field": field, "message": f"unknown field {extra!r}"})
            continue
        if error.validator == "not" and isinstance(error.instance, Mapping):
            # The only `not` in the request schema forbids giving both steps and epochs.
            out.append({"field": "steps", "message": "give either steps or epochs, not both"})
            continue
        out.append({"field": path or "(body)", "message": error.message})
    return out


def _bundle(document: dict[str, Any], schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    bundled: dict[str, Any] = _rewrite_refs(copy.deepcopy(document), own=None)
    components = bundled.setdefault("components", {}).setdefault("schemas", {})
    for file_name, schema in schemas.items():
        name = component_name(file_name)
        # $id would re-base every rewritten ref inside the component, so it goes; the dialect is OpenAPI 3.1's.
        embedded = {k: v for k, v in schema.items() if k not in ("$id", "$schema", "$defs")}
        components[name] = _rewrite_refs(embedded, own=name)
        for key, definition in schema.get("$defs", {}).items():
            components[def_component_name(name, key)] = _rewrite_refs(definition, own=name)
    return bundled


def def_component_name(component: str, key: str) -> str:
    """The component a schema file's `$defs` entry becomes: `common` + `timestamp` -> `common.timestamp`."""
    return f"{component}.{key}"


def component_name(file_name: str) -> str:
    """`run-list.schema.json` -> `run-list`: the key under components.schemas."""
    return Path(file_name).name.removesuffix(_SUFFIX)


def _rewrite_refs(node: Any, own: str | None) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = _local_ref(value, own)
            else:
                out[key] = _rewrite_refs(value, own)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, own) for item in node]
    return node


def _local_ref(ref: str, own: str | None) -> str:
    target, _, fragment = ref.partition("#")
    if target.startswith(BASE_URI):
        target = target[len(BASE_URI) :]
    if not target:
        if own is None:
            return ref  # already document-local (#/components/...)
        component = own
    else:
        component = component_name(target)
    if fragment.startswith("/$defs/"):
        key, _, rest = fragment[len("/$defs/") :].partition("/")
        return f"#/components/schemas/{def_component_name(component, key)}" + (f"/{rest}" if rest else "")
    return f"#/components/schemas/{component}{fragment}"


def iter_refs(node: Any) -> Iterator[str]:
    """Every `$ref` value in a JSON document (used to prove a bundle is self-contained)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


@cache
def default_contract() -> Contract:
    """The contract from the default schemas directory, loaded once per process."""
    return Contract()
