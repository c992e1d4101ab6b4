"""The package stands alone: it imports only what it declares, and its wheel carries the contract byte for byte."""

from __future__ import annotations

import ast
import email.parser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trainer_conformance
from trainer_conformance import checks as _checks  # noqa: F401  (registers the checks)
from trainer_conformance.contract import schemas_dir
from trainer_conformance.registry import CHECKS, replace_table, select

PACKAGE = Path(trainer_conformance.__file__).resolve().parent  # installed (tox) or the source tree
PROJECT = Path(__file__).resolve().parents[1]  # conformance/ in the checkout these tests belong to
SOURCE_SCHEMAS = PROJECT.parent / "schemas"
DOCS = PROJECT.parent / "docs" / "conformance.md"
README = PROJECT.parent / "README.md"
ALLOWED = {"httpx", "jsonschema", "referencing", "numpy", "safetensors"}


def test_the_package_imports_only_the_stdlib_and_its_declared_dependencies() -> None:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    foreign = found - ALLOWED - set(sys.stdlib_module_names) - {"trainer_conformance"}
    assert foreign == set(), f"imports outside the allowed set: {foreign}"
    assert "tinygrad" not in found and "reference_server" not in found


def test_every_contract_schema_loads() -> None:
    from trainer_conformance.contract import Contract

    contract = Contract()
    assert "verification-report.schema.json" in contract.schemas
    assert contract.problems("health", {"mocks": True}) != []


def build_wheel(out: Path) -> Path:
    """Build with hatchling's API when installed here, else through pip (which may fetch hatchling)."""
    try:
        from hatchling.builders.wheel import WheelBuilder
    except ImportError:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(PROJECT)],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot build a wheel offline here (no hatchling, pip failed): {done.stderr[-300:]}")
        return next(out.glob("trainer_conformance-*.whl"))
    return Path(next(iter(WheelBuilder(str(PROJECT)).build(directory=str(out), versions=["standard"]))))


@pytest.mark.skipif(not SOURCE_SCHEMAS.is_dir(), reason="not a source checkout: no ../schemas to compare with")
def test_the_wheel_ships_the_schemas_byte_for_byte(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.removeprefix("trainer_conformance/schemas/"): archive.read(name)
            for name in archive.namelist()
            if name.startswith("trainer_conformance/schemas/") and not name.endswith("/")
        }
        manifest = "trainer_conformance/_data/checksums.json"
        if manifest in archive.namelist():
            source = PROJECT.parent / "functions" / "trainer-tinygrad" / "datasets" / "checksums.json"
            assert archive.read(manifest) == source.read_bytes()
    source = {p.name: p.read_bytes() for p in SOURCE_SCHEMAS.iterdir() if p.is_file()}
    assert shipped == source


def test_schemas_come_from_the_package_copy_when_installed_else_the_checkout() -> None:
    found = schemas_dir()
    assert found in (PACKAGE / "schemas", SOURCE_SCHEMAS)
    assert (found / "headers.json").is_file()


@pytest.mark.skipif(not DOCS.is_file(), reason="not a source checkout: no docs/conformance.md")
def test_the_docs_checks_table_is_the_one_the_registry_generates() -> None:
    text = DOCS.read_text()
    assert replace_table(text) == text, (
        "docs/conformance.md's checks table is stale: run `trainer-conformance list --update docs/conformance.md`"
    )


@pytest.mark.skipif(not README.is_file(), reason="not a source checkout: no README.md")
def test_the_readme_links_the_generated_table_instead_of_copying_it() -> None:
    text = README.read_text()
    assert "docs/conformance.md#checks" in text
    assert [c.id for c in CHECKS if f"| `{c.id}` |" in text] == []


def test_every_check_names_the_evidence_it_keeps() -> None:
    assert [c.id for c in CHECKS if not c.evidence.strip()] == []
    assert len(select()) == len(CHECKS) - len([c for c in CHECKS if c.optional])


def test_the_wheel_carries_its_readme_licence_classifiers_urls_and_py_typed(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    assert "trainer_conformance/py.typed" in names and "trainer_conformance/profiles.json" in names
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "TrainerClient" in (metadata.get_payload() or "")
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and "Topic :: Software Development :: Testing" in classifiers
    assert any(url.startswith("Homepage, https://") for url in metadata.get_all("Project-URL") or [])
    assert any(extra == "fuzz" for extra in metadata.get_all("Provides-Extra") or [])
