"""The contract's JSON Schemas as this project reads them: Draft 2020-12, except that an integer is an integer.

JSON Schema calls 50.0 an integer (a number with no fractional part); a client that sends `"steps": 50.0` has sent a
float, and Python would carry it as one into the trainer. So `integer` here means a JSON integer literal (and never
a boolean): one reading for the server's request checks and the trainer's config check alike.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def _is_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


#: Draft 2020-12 with strict integers.
StrictValidator: Any = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
)


def schemas_dir() -> Path:
    """The repository's `schemas/` (a source checkout), or the copy an installed wheel carries."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[2] / "schemas", here / "_schemas"):
        if (candidate / "common.schema.json").is_file():
            return candidate
    raise FileNotFoundError("the contract's schemas/ is neither in the source tree nor in the installed package")


@cache
def validator(name: str, directory: Path | None = None) -> Any:
    """A strict validator for schema file `name` with every other schema in its folder resolvable."""
    folder = directory or schemas_dir()
    documents = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012)) for doc in documents
    )
    schema = next(doc for doc in documents if doc["$id"].endswith("/" + name))
    return StrictValidator(schema, registry=registry, format_checker=FormatChecker())
