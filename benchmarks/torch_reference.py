"""The PyTorch side of the comparison: the training function's model, data, batches and optimizer, in PyTorch.

Run as a child process only (PyTorch is a benchmark dependency, never a runtime one):

    python -m benchmarks.torch_reference train --config FILE|- [--data-dir DIR] [--threads N]
    python -m benchmarks.torch_reference eval --model mlp --images 10000 --repeats 5 [--data-dir DIR]

`train` prints the training function's protocol lines (`started`, `metric`, `checkpoint` carrying the evaluation but
no file, then `finished` or `cancelled` after SIGTERM), so one parser measures both frameworks. What is the same:
the verified Fashion-MNIST from the dataset cache, `x = uint8 / 255` NCHW, batches drawn on the host with numpy's
Generator seeded by (seed, step), the layer stack, Adam (b1 0.9, b2 0.999, eps 1e-8) or SGD with momentum, mean
softmax cross-entropy, evaluation on the first `eval_samples` test images in batches of 1000 in inference mode.
What differs: the initial weights (both frameworks draw from the same uniform bounds, with different generators).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from trainer_tinygrad.datasets import DatasetCache, load_dataset

EVAL_BATCH = 1000


def emit(event: str, **fields: Any) -> None:
    """One protocol line, flushed."""
    sys.stdout.write(json.dumps({"event": event, **fields, "time": time.time()}) + "\n")
    sys.stdout.flush()


def build(name: str, shape: tuple[int, ...], classes: int) -> nn.Module:
    """The training function's `mlp` or 1x28x28 `convnet` (see functions/trainer-tinygrad/README.md, Models)."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 128), nn.ReLU(), nn.Linear(128, classes))
    if name == "convnet" and shape == (1, 28, 28):
        return nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.Conv2d(32, 32, 5), nn.ReLU(), nn.BatchNorm2d(32, eps=1e-5),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.BatchNorm2d(64, eps=1e-5),
            nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(576, classes),
        )  # fmt: skip
    raise ValueError(f"no PyTorch reference for {name} on {shape}")


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 NCHW -> float32 in [0, 1], as the checkpoint format fixes it."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over `images`, in batches of 1000, in inference mode."""
    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            x = preprocess(images[start : start + EVAL_BATCH])
            y = torch.from_numpy(labels[start : start + EVAL_BATCH].astype(np.int64))
            logits = model(x)
            total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
    model.train()
    return total / len(images), correct / len(images)


def train(config: dict[str, Any], data_dir: Path | None, stop: threading.Event) -> int:
    """Train as the training function does; protocol lines on stdout. Returns the exit code."""
    data = load_dataset(config["dataset"], DatasetCache(data_dir))
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    torch.manual_seed(int(config["seed"]))
    model = build(config["model"], shape, data.num_classes)
    lr = float(config["learning_rate"])
    optimizer: torch.optim.Optimizer
    if config["optimizer"] == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.get("momentum") or 0.0)
    total_steps, batch_size, seed = int(config["steps"]), int(config["batch_size"]), int(config["seed"])
    log_every, checkpoint_every = int(config["log_every"]), int(config["checkpoint_every"])
    n_eval = len(data.x_test) if config.get("eval_samples") is None else int(config["eval_samples"])
    x_test, y_test = data.x_test[:n_eval], data.y_test[:n_eval]
    y_train = data.y_train.astype(np.int64)
    emit("started", device="torch-cpu", torch_version=torch.__version__, threads=torch.get_num_threads(),
         model=config["model"], total_steps=total_steps, batch_size=batch_size)  # fmt: skip
    model.train()
    done = 0
    window_start, window_step = time.perf_counter(), 0
    while done < total_steps and not stop.is_set():
        n = done + 1
        index = np.random.default_rng((seed, n)).integers(0, len(data.x_train), batch_size)
        x, y = preprocess(data.x_train[index]), torch.from_numpy(y_train[index])
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        done = n
        if n % log_every == 0 or n == total_steps:
            now = time.perf_counter()
            emit("metric", step=n, epoch=n * batch_size / len(data.x_train), loss=float(loss),
                 accuracy=float((logits.argmax(-1) == y).float().mean()), learning_rate=lr,
                 samples_per_second=(n - window_step) * batch_size / max(now - window_start, 1e-9))  # fmt: skip
            window_start, window_step = now, n
        if n % checkpoint_every == 0 or n == total_steps:
            eval_loss, eval_accuracy = evaluate(model, x_test, y_test)
            emit("checkpoint", step=n, eval_loss=eval_loss, eval_accuracy=eval_accuracy, eval_samples=n_eval)
            window_start, window_step = time.perf_counter(), n
    if done < total_steps:
        emit("cancelled", step=done)
        return 3
    emit("finished", step=done)
    return 0


def time_evaluation(model_name: str, data_dir: Path | None, images: int, repeats: int) -> dict[str, Any]:
    """Seconds per evaluation of the first `images` test images: the first call, then `repeats` more."""
    data = load_dataset("fashion-mnist", DatasetCache(data_dir))
    torch.manual_seed(0)
    model = build(model_name, tuple(int(d) for d in data.x_train.shape[1:]), data.num_classes)
    x, y = data.x_test[:images], data.y_test[:images]
    t = time.perf_counter()
    evaluate(model, x, y)
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        evaluate(model, x, y)
        times.append(time.perf_counter() - t)
    return {"event": "eval_timing", "first_s": first, "times_s": times, "images": images}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_reference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train")
    tr.add_argument("--config", required=True, help="a resolved config as JSON: a file, or - for stdin")
    ev = commands.add_parser("eval")
    ev.add_argument("--model", default="mlp")
    ev.add_argument("--images", type=int, default=10_000)
    ev.add_argument("--repeats", type=int, default=5)
    for p in (tr, ev):
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "eval":
        print(json.dumps(time_evaluation(args.model, args.data_dir, args.images, args.repeats)), flush=True)
        return 0
    text = sys.stdin.read() if args.config == "-" else Path(args.config).read_text(encoding="utf-8")
    return train(json.loads(text), args.data_dir, stop)


if __name__ == "__main__":
    sys.exit(main())
