"""What every benchmark shares: the options it was asked for, a verified dataset cache, scratch space, child env."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer_tinygrad.datasets import DatasetCache

#: Fashion-MNIST from the Debian package: imported into scratch space when the default cache lacks it.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parent.parent
#: What `--before REV` exports: the server runs with its own schemas and starts its own training function.
BEFORE_PATHS = ("functions/trainer-tinygrad", "reference_server", "schemas")


def export_revision(revision: str, paths: Sequence[str], into: Path) -> Path:
    """`paths` of the repository as they were at `revision`, exported with `git archive` into `into`; `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, *paths], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


@dataclass(frozen=True)
class Options:
    """How long and how often to measure; recorded in every result file."""

    quick: bool = False
    repeats: int = 3
    convnet_steps: int = 40  # throughput runs of the convnet (each side, cold and warm)
    convnet_accuracy_budget_s: float = 900  # per framework, for time to 89%; 0 skips it
    sse_subscribers: tuple[int, ...] = (1, 10, 100, 1000, 2000)
    before: str | None = None  # a git revision whose training function (and server) runs beside this one
    levers: tuple[str, ...] = ()  # lever groups to run (all when empty); the others are carried over

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON object."""
        return asdict(self)


class Workspace:
    """A scratch folder, a data cache holding verified Fashion-MNIST, and the environment for child processes."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._tmp = tempfile.TemporaryDirectory(prefix="trainer-bench-")
        self.root = Path(self._tmp.name)
        self.python = sys.executable
        self._data_dir: Path | None = None
        self._before: Path | None = None

    def close(self) -> None:
        """Remove the scratch folder."""
        self._tmp.cleanup()

    def scratch(self, name: str) -> Path:
        """A fresh folder under the scratch root."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        return path

    def kernel_cache(self, name: str) -> str:
        """The tinygrad kernel cache (CACHEDB; the step cache lives beside it) for one benchmark's runs.

        A fresh one in scratch space, so that a kept result does not depend on what ran on this machine before. With
        `--quick` (results not kept), tinygrad's own cache, which `make setup` warmed: a cold one cost each quick
        benchmark several CPU-seconds compiling the same mlp kernels again, and the tests run four of them.
        """
        if self.options.quick:
            from tinygrad.helpers import CACHEDB  # tinygrad's default, or $CACHEDB

            return str(CACHEDB)
        return str(self.scratch(name) / "cache.db")

    @property
    def data_dir(self) -> Path:
        """A dataset cache where fashion-mnist is verified: the default one, else an import into scratch space."""
        if self._data_dir is None:
            cache = DatasetCache()
            if cache.status("fashion-mnist").verified:
                self._data_dir = cache.root
            else:
                root = self.root / "datasets"
                status = DatasetCache(root).import_dir("fashion-mnist", FASHION_MNIST_DIR)
                if not status.verified:
                    raise RuntimeError(f"fashion-mnist could not be verified in {root}")
                self._data_dir = root
        return self._data_dir

    def before_path(self) -> Path | None:
        """The training function at `options.before`, exported from git into scratch space (None when not asked)."""
        root = self.before_root()
        return None if root is None else root / "functions" / "trainer-tinygrad"

    def before_root(self) -> Path | None:
        """The server, its schemas and the training function at `options.before`, exported with `git archive` into
        one scratch folder (None when not asked): the server there starts its own trainer, from the same folder."""
        if self.options.before is None:
            return None
        if self._before is None:
            self._before = export_revision(self.options.before, BEFORE_PATHS, self.scratch("before"))
        return self._before

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a child: this one, the repo on PYTHONPATH (for `-m benchmarks.*`), plus `extra`."""
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, **extra}
