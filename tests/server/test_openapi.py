"""The OpenAPI document against the route table and the schema files (no server needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from server_harness import CONTRACT, REPO
from trainer_tinygrad.config import resolve_config

from reference_server.app import Service
from reference_server.schemas import component_name, iter_refs
from reference_server.settings import Settings


def _route_templates(tmp_path: Path) -> set[str]:
    service = Service.build(Settings(evidence_dir=tmp_path / "evidence", data_dir=tmp_path / "data"))
    app = service.application()
    service.catalog.close()
    templates = set()
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern  # type: ignore[attr-defined]
        templates.add(re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).rstrip("$"))
    return templates


def test_every_route_is_documented_and_every_documented_path_is_routed(tmp_path: Path) -> None:
    source = json.loads((REPO / "schemas" / "openapi.json").read_text())
    assert _route_templates(tmp_path) == set(source["paths"])


def test_the_source_document_refers_to_the_schema_files() -> None:
    source = json.loads((REPO / "schemas" / "openapi.json").read_text())
    for name, schema in source["components"]["schemas"].items():
        if "$ref" in schema:
            assert schema == {"$ref": f"{name}.schema.json"} and f"{name}.schema.json" in CONTRACT.documents
    for ref in iter_refs(source):
        target = ref.split("#")[0]
        assert not target or (REPO / "schemas" / target).is_file(), ref


def test_the_bundle_is_self_contained_and_every_ref_resolves() -> None:
    bundled = CONTRACT.openapi()
    for ref in iter_refs(bundled):
        assert ref.startswith("#/"), ref
        node = bundled
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    assert {component_name(f) for f in CONTRACT.documents} <= set(bundled["components"]["schemas"])
    run = bundled["components"]["schemas"]["run"]
    assert "$id" not in run and run["properties"]["config"] == {"$ref": "#/components/schemas/training-config"}


def test_every_operation_answers_problem_json_for_its_errors() -> None:
    bundled = CONTRACT.openapi()
    for path, item in bundled["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400 and "$ref" in response:
                    target = bundled["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                    assert "application/problem+json" in target["content"], (path, method, status)


def test_the_request_schema_states_the_defaults_config_py_resolves() -> None:
    """Defaults live in trainer_tinygrad.config; the contract states the constant ones, and must agree."""
    properties = CONTRACT.documents["run-create-request.schema.json"]["properties"]
    resolved = resolve_config({}, "fashion-mnist")
    stated = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    assert stated and stated == {name: resolved[name] for name in stated}
    assert not any("default " in prop.get("description", "") for name, prop in properties.items() if name in stated)
