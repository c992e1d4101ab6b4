"""The shipped manifest: valid against its schema, the published values, sources for every value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from dataset_formats import REPO, SCHEMAS
from trainer_tinygrad.datasets import Manifest, ManifestError
from trainer_tinygrad.datasets import manifest as manifest_module

SHIPPED = REPO / "functions/trainer-tinygrad/datasets/checksums.json"


def shipped() -> dict:
    return json.loads(SHIPPED.read_text())


def test_the_manifest_is_valid_against_its_schema():
    schema = json.loads((SCHEMAS / "dataset-manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(shipped())


def test_the_manifest_lists_the_three_datasets_with_published_values():
    m = Manifest.load(SHIPPED)
    assert m.names == ["mnist", "fashion-mnist", "cifar10"]
    mnist = m.dataset("mnist").file("train-images-idx3-ubyte.gz")
    assert (mnist.bytes, mnist.sha256) == (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609")
    assert all(f.payload_sha256 is None for f in m.dataset("mnist").files)  # unknown here: not invented
    fashion = m.dataset("fashion-mnist").file("t10k-labels-idx1-ubyte.gz")
    assert fashion.sha256 == "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
    assert fashion.payload_sha256 == "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    cifar = m.dataset("cifar10").file("cifar-10-python.tar.gz")
    assert (cifar.bytes, cifar.sha256[:12]) == (170498071, "6d958be07457")
    assert [s.count for s in m.dataset("cifar10").splits.values()] == [50000, 10000]
    assert m.dataset("fashion-mnist").num_classes == 10


def test_every_value_names_a_source_that_the_manifest_describes():
    doc = shipped()
    for dataset in doc["datasets"].values():
        for f in dataset["files"]:
            assert f["mirrors"], f["name"]
            refs = [m["source"] for m in f["mirrors"]] + [v for v in f["published"].values() if v]
            assert set(refs) <= set(doc["sources"]), (f["name"], set(refs) - set(doc["sources"]))
            if f["payload_sha256"] is not None:
                assert f["published"]["payload_sha256"]


def test_the_wheel_copy_is_found_when_the_source_tree_is_absent(tmp_path, monkeypatch):
    wheel_copy = tmp_path / "_data" / "checksums.json"
    wheel_copy.parent.mkdir()
    wheel_copy.write_bytes(SHIPPED.read_bytes())
    monkeypatch.setattr(manifest_module, "MANIFEST_CANDIDATES", (tmp_path / "absent.json", wheel_copy))
    assert Manifest.load().path == wheel_copy


@pytest.mark.parametrize("text", ["{", '{"datasets": {"mnist": {"files": []}}}', "[]"])
def test_a_malformed_manifest_is_a_manifest_error(tmp_path, text):
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(ManifestError, match="malformed dataset manifest"):
        Manifest.load(tmp_path / "m.json")
    with pytest.raises(ManifestError, match="cannot read"):
        Manifest.load(tmp_path / "absent.json")


def test_the_datasets_package_never_imports_tinygrad():
    code = "import sys, trainer_tinygrad.datasets; sys.exit('tinygrad' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_public_names_are_exported():
    import trainer_tinygrad.datasets as pkg

    wanted = {"DatasetCache", "Dataset", "DatasetStatus", "FileStatus", "Manifest", "load_dataset"}
    wanted |= {"default_cache_dir", "DatasetError", "DatasetNotAvailable", "ChecksumMismatch"}
    assert wanted <= set(pkg.__all__)
    assert all(hasattr(pkg, name) for name in pkg.__all__)


def test_the_manifest_file_is_where_pyproject_force_includes_it():
    text = (REPO / "functions" / "trainer-tinygrad" / "pyproject.toml").read_text()
    assert '"datasets/checksums.json" = "trainer_tinygrad/_data/checksums.json"' in text
    assert Path(manifest_module.MANIFEST_CANDIDATES[1]).parts[-3:] == ("trainer_tinygrad", "_data", "checksums.json")
