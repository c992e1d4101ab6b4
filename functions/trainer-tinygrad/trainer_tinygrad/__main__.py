"""`python -m trainer_tinygrad train|device`: one training process per run, speaking the protocol on stdout.

stdout carries protocol lines only: the real stdout is kept for them and fd 1 is pointed at stderr, so a stray print
(tinygrad's DEBUG output included) lands in the log, never in the protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import TextIO

from trainer_tinygrad import collector
from trainer_tinygrad.protocol import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_FINISHED,
    EXIT_INVALID_CONFIG,
    EventWriter,
    StopRequest,
    function_version,
    tinygrad_version,
)

log = logging.getLogger("trainer_tinygrad")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    stop = StopRequest()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.request():
            log.info("signal %d: stopping after the current step", signum)

    # First thing, before tinygrad is imported (seconds): a SIGTERM from then on is a clean cancel, never a kill.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    collector.set_young_threshold()  # before the imports: they are most of what the collector would walk
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = _claim_stdout()
    if args.command == "device":
        return _device(out)
    return _train(args, EventWriter(out), stop)


def _parser() -> argparse.ArgumentParser:
    # Imported here, after the signal handlers, like everything a command needs: imports are most of a start.
    from trainer_tinygrad.datasets.cache import ENV_DATA_DIR

    environment = f"""environment:
  DEV               tinygrad's device: CPU, CUDA, ... (default: tinygrad's own choice)
  CACHEDB           tinygrad's compiled-kernel cache (default: ~/.cache/tinygrad/cache.db)
  {ENV_DATA_DIR}  the dataset cache when --data-dir is not given (default: ~/.cache/trainer-tinygrad/datasets)
"""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m trainer_tinygrad", description=__doc__, epilog=environment, formatter_class=raw
    )
    parser.add_argument("--version", action="version", version=function_version())
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="run one training job; protocol lines on stdout, log on stderr",
        epilog=environment,
        formatter_class=raw,
    )
    train.add_argument("--config", required=True, help="resolved config as JSON: a file, or - for stdin")
    train.add_argument("--out", required=True, type=Path, help="folder for checkpoints (created if missing)")
    train.add_argument("--data-dir", type=Path, help=f"dataset cache (default: ${ENV_DATA_DIR}, see below)")
    train.add_argument("--resume", type=Path, help="checkpoint to continue from; step numbering carries on")
    train.add_argument("--run-id", help="recorded in checkpoint metadata (default: the --out folder's name)")
    commands.add_parser(
        "device",
        help="print the device tinygrad opens, as JSON; exit 0 when it works",
        epilog=environment,
        formatter_class=raw,
    )
    return parser


def _claim_stdout() -> TextIO:
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def _device(out: TextIO) -> int:
    try:
        from tinygrad import Device, Tensor

        from trainer_tinygrad import device_programs

        device_programs.install()
        device = Device.DEFAULT
        # Opening the device is not enough: a kernel must compile and run (the CPU device needs clang).
        if (Tensor([1.0, 2.0]) + 1).tolist() != [2.0, 3.0]:
            raise RuntimeError(f"{device} computed a wrong sum")
        report = {"ok": True, "device": device, "tinygrad_version": tinygrad_version()}
    except Exception as e:
        report = {"ok": False, "reason": f"{type(e).__name__}: {e}"}
    out.write(json.dumps(report) + "\n")
    out.flush()
    return EXIT_FINISHED if report["ok"] else EXIT_FAILED


def _train(args: argparse.Namespace, events: EventWriter, stop: StopRequest) -> int:
    # Imported here: the config check loads jsonschema (~0.09 s), which the `device` probe of every server start
    # does not need.
    from trainer_tinygrad.config import ConfigError, read_config

    try:
        config = read_config(args.config)
    except ConfigError as e:
        events.emit("failed", code=e.code, reason=str(e))
        return EXIT_INVALID_CONFIG
    try:
        from trainer_tinygrad import device_programs
        from trainer_tinygrad.datasets import DatasetCache, load_dataset
        from trainer_tinygrad.train import train

        device_programs.install()
        args.out.mkdir(parents=True, exist_ok=True)
        data = load_dataset(config["dataset"], DatasetCache(args.data_dir))
        terminal = train(
            config,
            data,
            args.out,
            events,
            stop.is_set,
            run_id=args.run_id or args.out.resolve().name,
            resume=args.resume,
        )
    except Exception as e:
        # Known failures carry a stable `code` (datasets, checkpoints, divergence); anything else is a bug here.
        code = getattr(e, "code", None)
        if not isinstance(code, str):
            code = "internal_error"
            traceback.print_exc(file=sys.stderr)
        log.error("failed (%s): %s", code, e)
        events.emit("failed", code=code, reason=f"{e}" if code != "internal_error" else f"{type(e).__name__}: {e}")
        return EXIT_FAILED
    return EXIT_CANCELLED if terminal == "cancelled" else EXIT_FINISHED


if __name__ == "__main__":
    sys.exit(main())
