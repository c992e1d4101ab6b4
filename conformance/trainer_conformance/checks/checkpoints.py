"""Section 5: checkpoints: listed, downloadable, intact, loadable, changing, and reproducing their evaluation."""

from __future__ import annotations

import base64
import hashlib
import itertools
from typing import Any
from urllib.parse import quote

import numpy as np

from ..expectations import expect_headers, expect_json, expect_media_type, expect_status
from ..failures import CheckFailure, CheckSkipped
from ..inference import REFERENCE_MODELS, CheckpointError, evaluate, logits_for
from ..published import DatasetFileError, match_published, read_cifar_batch, read_idx
from ..registry import check
from ..session import Session

_AREA = ("schemas/checkpoint.schema.json", "schemas/checkpoint-list.schema.json", "functions/trainer-tinygrad/")
#: The numpy forward pass must reproduce the reported evaluation accuracy within this (1 percentage point).
ACCURACY_TOLERANCE = 0.01


@check(
    "checkpoints.listed",
    "Checkpoints are listed with hashes",
    "GET /api/training/runs/{run_id}/checkpoints answers 200 with a body valid against checkpoint-list.schema.json "
    "listing at least one checkpoint, names unique, the same ones (name, sha256) the run's status body lists.",
    evidence="the checkpoint list probe; the last status poll",
    needs={"main"},
    area=_AREA,
)
def listed(s: Session) -> dict[str, Any]:
    main = s.run("main")
    exchange = s.checkpoint_list(main)
    body = expect_json(s.contract, exchange, "checkpoint-list")
    expect_headers(s.contract, exchange, "json")
    names = [c["name"] for c in body["checkpoints"]]
    evidence = [exchange.probe]
    if not names:
        raise CheckFailure("No checkpoints", f"finished run {main.run_id} lists no checkpoint", evidence)
    if len(set(names)) != len(names):
        raise CheckFailure("Duplicate checkpoint names", f"{names}", evidence)
    in_status = {
        c.get("name"): c.get("sha256") for c in (main.final or {}).get("checkpoints", []) if isinstance(c, dict)
    }
    listed_hashes = {c["name"]: c["sha256"] for c in body["checkpoints"]}
    if in_status != listed_hashes:
        evidence += [main.polls[-1].exchange.probe] if main.polls else []
        raise CheckFailure(
            "Lists disagree", f"status body lists {in_status}, checkpoint list {listed_hashes}", evidence
        )
    return {"checkpoints": names}


@check(
    "checkpoints.download",
    "Each download matches its hash",
    "Each listed checkpoint downloads with 200, application/octet-stream, the checkpoint header block "
    "(Digest, X-Checksum-SHA256), and bytes whose SHA-256 and size equal the listing and the headers.",
    evidence="`checkpoints/<role>-<run_id>/` (every file, and `verification.json` with its hashes)",
    needs={"main"},
    area=_AREA,
)
def download(s: Session) -> dict[str, Any]:
    main = s.run("main")
    checked = []
    for entry, got in s.checkpoint_downloads(main):
        exchange = got.exchange
        evidence = [exchange.probe, s.checkpoint_list(main).probe]
        expect_status(exchange, 200)
        expect_media_type(exchange, "application/octet-stream")
        expect_headers(s.contract, exchange, "checkpoint")
        got.results["sha256"] = got.sha256
        got.results["listed_sha256"] = entry.get("sha256")
        if got.sha256 != entry.get("sha256") or got.bytes != entry.get("bytes"):
            got.results["hash_matches"] = False
            raise CheckFailure(
                "Checkpoint hash mismatch",
                f"{got.name}: downloaded {got.bytes} bytes with sha256 {got.sha256}; listed {entry.get('bytes')} "
                f"bytes with sha256 {entry.get('sha256')}",
                [*evidence, got.path],
            )
        header_hex = exchange.headers.get("x-checksum-sha256")
        digest = exchange.headers.get("digest", "")
        expected_digest = "sha-256=" + base64.b64encode(hashlib.sha256(exchange.body).digest()).decode()
        if header_hex != got.sha256 or digest != expected_digest:
            got.results["hash_matches"] = False
            raise CheckFailure(
                "Checksum headers disagree",
                f"{got.name}: X-Checksum-SHA256 {header_hex!r}, Digest {digest!r}; the bytes give {got.sha256}",
                evidence,
            )
        got.results["hash_matches"] = True
        checked.append(got.name)
    return {"downloaded": checked}


@check(
    "checkpoints.loadable",
    "Checkpoints open with safetensors and hold finite weights",
    "Each checkpoint opens with the safetensors library (numpy), holds model weights under `model.`, every tensor "
    "is finite, and its metadata `step` (when present) equals the listed step.",
    evidence="`checkpoints/<role>-<run_id>/verification.json`",
    needs={"main"},
    area=_AREA,
)
def loadable(s: Session) -> dict[str, Any]:
    main = s.run("main")
    summary = {}
    for entry, got in s.checkpoint_downloads(main):
        if got.checkpoint is None:
            got.results["opens"] = False
            raise CheckFailure("Checkpoint does not open", f"{got.name}: {got.error}", [got.path, got.exchange.probe])
        got.results["opens"] = True
        weights = got.checkpoint.model_tensors()
        if not weights:
            raise CheckFailure("No model weights", f"{got.name} holds no tensor named model.*", [got.path])
        bad = [name for name, t in got.checkpoint.tensors.items() if t.dtype.kind == "f" and not np.isfinite(t).all()]
        got.results["finite"] = not bad
        if bad:
            raise CheckFailure("Non-finite weights", f"{got.name}: {', '.join(bad[:5])}", [got.path])
        step = got.checkpoint.metadata.get("step")
        if step is not None and step != str(entry.get("step")):
            raise CheckFailure(
                "Step disagrees", f"{got.name}: metadata step {step}, listed {entry.get('step')}", [got.path]
            )
        summary[got.name] = {"tensors": len(got.checkpoint.tensors), "model_tensors": len(weights)}
    return {"checkpoints": summary}


@check(
    "checkpoints.differ",
    "Successive checkpoints differ",
    "The model weights of each checkpoint differ from the previous checkpoint's (training changed them).",
    evidence="`checkpoints/<role>-<run_id>/`; the largest weight change per pair in `details`",
    needs={"main"},
    area=_AREA,
)
def differ(s: Session) -> dict[str, Any]:
    main = s.run("main")
    loaded = [got for _, got in s.checkpoint_downloads(main) if got.checkpoint is not None]
    if len(loaded) < 2:
        raise CheckSkipped(f"{len(loaded)} loadable checkpoint(s); two are needed to compare")
    changes = []
    for before, after in itertools.pairwise(loaded):
        assert before.checkpoint is not None and after.checkpoint is not None
        a, b = before.checkpoint.model_tensors(), after.checkpoint.model_tensors()
        if set(a) != set(b):
            raise CheckFailure(
                "Different tensors", f"{before.name} and {after.name} name different tensors", [after.path]
            )
        largest = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a)
        changes.append({"from": before.name, "to": after.name, "max_abs_change": largest})
        if largest == 0.0:
            raise CheckFailure(
                "Checkpoints identical",
                f"{after.name} has exactly the weights of {before.name}",
                [before.path, after.path],
            )
    return {"changes": changes}


def _test_split(s: Session, dataset: str, count: int | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The dataset's test images and labels, fetched from the target and checked against the published manifest."""
    if s.manifest is None:
        raise CheckSkipped("the published dataset manifest is not available to this installation")
    split = s.manifest.test_split(dataset)
    names = [split["images"], split["labels"]] if "images" in split else [split["archive"]]
    files: dict[str, bytes] = {}
    details: dict[str, Any] = {"files": {}}
    for name in names:
        exchange = s.client.request(
            "GET", f"/api/datasets/{quote(dataset)}/files/{quote(name)}", headers={"Accept": "application/octet-stream"}
        )
        expect_status(exchange, 200)
        published = s.manifest.file(dataset, name)
        if published is None:
            raise CheckSkipped(f"the published manifest does not list {dataset}/{name}")
        try:
            matched = match_published(exchange.body, published)
        except DatasetFileError as exc:
            raise CheckFailure("Dataset file does not match the manifest", str(exc), [exchange.probe]) from exc
        details["files"][name] = {
            "sha256": hashlib.sha256(exchange.body).hexdigest(),
            "matched": matched,
            "probe": exchange.probe,
        }
        files[name] = exchange.body
    try:
        if "images" in split:
            images, labels = read_idx(files[split["images"]]), read_idx(files[split["labels"]])
            images = images.reshape(len(images), *s.manifest.image_shape(dataset))
        else:
            batches = [read_cifar_batch(files[split["archive"]], member) for member in split["members"]]
            images = np.concatenate([b[0] for b in batches])
            labels = np.concatenate([b[1] for b in batches])
    except DatasetFileError as exc:
        raise CheckFailure(
            "Dataset file unreadable", str(exc), [d["probe"] for d in details["files"].values()]
        ) from exc
    if count is not None:
        images, labels = images[:count], labels[:count]
    return images, labels, details


@check(
    "checkpoints.forward_pass",
    "A numpy forward pass reproduces the reported accuracy",
    "For the reference model families (mlp, convnet), evaluating the final checkpoint with an independent numpy "
    "forward pass on the first eval_samples test images (fetched from GET /api/datasets/{name}/files/{file} and "
    "verified against the published dataset manifest) gives the reported eval_accuracy within 1 percentage point.",
    evidence="the test-file probes; `checkpoints/<role>-<run_id>/verification.json` (numpy and reported figures)",
    needs={"main"},
    area=(*_AREA, "functions/trainer-tinygrad/README.md"),
)
def forward_pass(s: Session) -> dict[str, Any]:
    main = s.run("main")
    model, dataset = main.config.get("model"), main.config.get("dataset")
    if model not in REFERENCE_MODELS:
        raise CheckSkipped(f"model {model!r} is not a reference model family")
    entries = s.checkpoint_downloads(main)
    if not entries:
        raise CheckSkipped("the run has no checkpoint")
    entry, got = entries[-1]
    if got.checkpoint is None:
        raise CheckSkipped(f"{got.name} does not open (see checkpoints.loadable)")
    samples = entry.get("eval_samples") or main.config.get("eval_samples")
    images, labels, details = _test_split(s, str(dataset), samples if isinstance(samples, int) else None)
    try:
        logits = logits_for(got.checkpoint, str(model), images)
    except (CheckpointError, ValueError) as exc:
        raise CheckFailure("Forward pass impossible", f"{got.name}: {exc}", [got.path]) from exc
    loss, accuracy = evaluate(logits, labels)
    reported = float(entry["eval_accuracy"])
    details.update(
        {
            "checkpoint": got.name,
            "model": model,
            "dataset": dataset,
            "images": len(images),
            "numpy_eval_loss": loss,
            "numpy_eval_accuracy": accuracy,
            "reported_eval_loss": entry.get("eval_loss"),
            "reported_eval_accuracy": reported,
        }
    )
    got.results["forward_pass"] = details
    if abs(accuracy - reported) > ACCURACY_TOLERANCE:
        raise CheckFailure(
            "Accuracy not reproduced",
            f"{got.name} on {len(images)} {dataset} test images: numpy accuracy {accuracy:.4f}, reported "
            f"{reported:.4f} (tolerance {ACCURACY_TOLERANCE})",
            [got.path, s.checkpoint_list(main).probe],
        )
    return details
