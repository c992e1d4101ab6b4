"""fetch: mirrors in order over a real loopback HTTP server; every attempt verified; resume with Range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_formats import idx_arrays, idx_dataset, sha, write_idx_dataset, write_manifest
from dataset_mirror import HTML_PAGE, Mirror, Route
from trainer_tinygrad.datasets import DatasetCache, FetchFailed, Manifest, load_dataset
from trainer_tinygrad.datasets.cli import main

TRAIN, TEST = 300, 60
IMAGES = "train-images-idx3-ubyte.gz"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    """Four small gzip IDX files in the MNIST layout (random pixels: the images file does not compress)."""
    return write_idx_dataset(tmp_path / "src", idx_arrays(TRAIN, TEST))


def cache_for(tmp_path: Path, mirror: Mirror, files: dict[str, bytes], prefixes: list[str]) -> DatasetCache:
    manifest = write_manifest(
        tmp_path / "manifest.json",
        {"mnist": idx_dataset(files, TRAIN, TEST, [mirror.base(p) for p in prefixes])},
    )
    return DatasetCache(tmp_path / "cache", Manifest.load(manifest))


def serve_all(mirror: Mirror, prefix: str, files: dict[str, bytes], **overrides: Route) -> None:
    for name, data in files.items():
        mirror.serve(prefix, name, overrides.get(name, Route("ok", data)))


def cache_listing(cache: DatasetCache) -> list[str]:
    return sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*"))


def test_fetch_downloads_verifies_and_records_the_mirror(tmp_path, mirror, files):
    serve_all(mirror, "a", files)
    cache = cache_for(tmp_path, mirror, files, ["a"])
    status = cache.fetch("mnist", progress=False)
    assert status.verified and {f.matched for f in status.files} == {"archive"}
    assert {f.source for f in status.files} == {mirror.base("a") + n for n in files}
    assert cache_listing(cache) == sorted(["mnist", "mnist/.stamps.json", *(f"mnist/{n}" for n in files)])
    data = load_dataset("mnist", cache)
    assert data.x_train.shape == (TRAIN, 1, 28, 28) and data.y_test.shape == (TEST,)
    # A second fetch finds everything verified and downloads nothing.
    before = len(mirror.log)
    cache.fetch("mnist", progress=False)
    assert len(mirror.log) == before


@pytest.mark.parametrize("kind", ["html", "truncated", "404", "reset", "wrong"])
def test_a_bad_mirror_falls_through_to_the_next(tmp_path, mirror, files, kind):
    serve_all(mirror, "bad", files, **{IMAGES: Route(kind, files[IMAGES])})
    if kind == "404":
        del mirror.routes[f"/bad/{IMAGES}"]
    serve_all(mirror, "good", files)
    cache = cache_for(tmp_path, mirror, files, ["bad", "good"])
    status = cache.fetch("mnist", progress=False)
    assert status.verified
    images = next(f for f in status.files if f.name == IMAGES)
    assert images.source == mirror.base("good") + IMAGES
    assert (f"/bad/{IMAGES}", None) in mirror.log
    assert (f"/good/{IMAGES}", None) in mirror.log
    assert (cache.root / "mnist" / IMAGES).read_bytes() == files[IMAGES]


def test_all_mirrors_bad_names_file_hashes_and_every_mirror_and_leaves_nothing(tmp_path, mirror, files):
    kinds = ["html", "truncated", "missing", "reset", "wrong"]
    for kind in kinds:
        serve_all(mirror, kind, files, **{IMAGES: Route(kind, files[IMAGES])})
    del mirror.routes[f"/missing/{IMAGES}"]
    cache = cache_for(tmp_path, mirror, files, kinds)
    with pytest.raises(FetchFailed) as err:
        cache.fetch("mnist", progress=False)
    message = str(err.value)
    assert f"mnist/{IMAGES}" in message
    assert sha(files[IMAGES]) in message  # expected
    assert sha(HTML_PAGE) in message and "looks like an HTML page" in message  # actual, per mirror
    assert sha(files[IMAGES][: len(files[IMAGES]) // 2]) in message
    assert "HTTP 404" in message
    for kind in kinds:
        assert mirror.base(kind) + IMAGES in message
    assert err.value.code == "fetch_failed"
    # Files before the failing one were verified and kept; nothing partial or temporary remains.
    leftovers = [p for p in cache_listing(cache) if ".partial" in p or p.endswith((".part", ".tmp"))]
    assert leftovers == []
    assert not (cache.root / "mnist" / IMAGES).exists()
    assert not cache.status("mnist").verified


def test_an_interrupted_download_resumes_with_range(tmp_path, mirror, files):
    serve_all(mirror, "a", files, **{IMAGES: Route("drop", files[IMAGES])})
    cache = cache_for(tmp_path, mirror, files, ["a"])
    status = cache.fetch("mnist", progress=False)
    assert status.verified
    first, second = mirror.requests("a")[:2]
    size = len(files[IMAGES])
    assert first == (f"/a/{IMAGES}", None)
    assert second == (f"/a/{IMAGES}", f"bytes={size // 2}-")
    # The second request carried only the rest: the file was sent once in total, not twice.
    assert mirror.sent[f"/a/{IMAGES}"] == size
    assert (cache.root / "mnist" / IMAGES).read_bytes() == files[IMAGES]


def test_a_partial_left_by_a_killed_fetch_is_resumed(tmp_path, mirror, files):
    serve_all(mirror, "a", files)
    cache = cache_for(tmp_path, mirror, files, ["a"])
    partial = cache.root / "mnist" / ".partial" / f"{IMAGES}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(files[IMAGES][:1000])
    assert cache.fetch("mnist", progress=False).verified
    assert (f"/a/{IMAGES}", "bytes=1000-") in mirror.log
    assert mirror.sent[f"/a/{IMAGES}"] == len(files[IMAGES]) - 1000
    assert not partial.parent.exists()


def test_a_server_ignoring_range_restarts_the_file(tmp_path, mirror, files):
    serve_all(mirror, "a", files, **{IMAGES: Route("ok", files[IMAGES], ranges=False)})
    cache = cache_for(tmp_path, mirror, files, ["a"])
    partial = cache.root / "mnist" / ".partial" / f"{IMAGES}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(files[IMAGES][:1000])
    assert cache.fetch("mnist", progress=False).verified
    assert (cache.root / "mnist" / IMAGES).read_bytes() == files[IMAGES]


def test_a_corrupt_partial_is_discarded_and_the_mirror_retried_from_zero(tmp_path, mirror, files):
    serve_all(mirror, "a", files)
    cache = cache_for(tmp_path, mirror, files, ["a"])
    partial = cache.root / "mnist" / ".partial" / f"{IMAGES}.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1000)
    assert cache.fetch("mnist", progress=False).verified
    assert [r for r in mirror.log if r[0].endswith(IMAGES)] == [(f"/a/{IMAGES}", "bytes=1000-"), (f"/a/{IMAGES}", None)]


def test_cli_fetch_shows_progress_and_fails_with_exit_1(tmp_path, mirror, files, capsys):
    serve_all(mirror, "a", files)
    cache = cache_for(tmp_path, mirror, files, ["a"])
    args = ["--data-dir", str(cache.root), "--manifest", str(tmp_path / "manifest.json")]
    assert main([*args, "fetch", "mnist", "--progress"]) == 0
    out, err = capsys.readouterr()
    assert f"mnist/{IMAGES}: verified by archive hash" in out
    assert "100.0%" in err and f"\rmnist/{IMAGES} [" in err

    other = tmp_path / "other"
    serve_all(mirror, "b", files, **{IMAGES: Route("html")})
    write_manifest(tmp_path / "m2.json", {"mnist": idx_dataset(files, TRAIN, TEST, [mirror.base("b")])})
    assert main(["--data-dir", str(other), "--manifest", str(tmp_path / "m2.json"), "fetch", "mnist"]) == 1
    _, err = capsys.readouterr()
    assert err.startswith(f"error: could not fetch mnist/{IMAGES}")
    assert np.array_equal(
        load_dataset("mnist", DatasetCache(cache.root, Manifest.load(tmp_path / "manifest.json"))).y_test.shape,
        (TEST,),
    )
