"""The server's view of the dataset cache (trainer_tinygrad.datasets, numpy + stdlib: never tinygrad).

Status checks can re-hash files, so every call runs on one worker thread: the event loop never waits on a hash,
and two checks never race on a verification stamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from trainer_tinygrad.config import DATASET_PREFERENCE
from trainer_tinygrad.datasets import DatasetCache, DatasetError
from trainer_tinygrad.datasets.sources import KNOWN_SOURCES

from .errors import DatasetFileNotFound, DatasetUnavailable

T = TypeVar("T")


def how_to_get(name: str | None = None) -> str:
    """The commands that put `name` (None: any dataset) into the server's cache: `import-known` only where a
    well-known local copy exists (Fashion-MNIST from Debian), `fetch` and `import` for every dataset."""
    shown = name or "NAME"
    ways = [f"`trainer-datasets fetch {shown}` (with internet)", f"`trainer-datasets import {shown} DIR` (a copy)"]
    local = [source.label for source in KNOWN_SOURCES if name in (None, source.dataset)]
    if local:
        ways.insert(0, f"`trainer-datasets import-known` ({', '.join(local)})")
    return "get it with " + ", ".join(ways[:-1]) + " or " + ways[-1]


class DatasetCatalog:
    """Which datasets are present and verified, and their cached files."""

    def __init__(self, data_dir: Path | None) -> None:
        self.cache = DatasetCache(data_dir)
        self.root: Path = Path(self.cache.root)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="datasets")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def statuses(self) -> list[dict[str, Any]]:
        """Every dataset of the manifest as dataset-list.schema.json `datasets[]` items."""
        return await self._call(lambda: [s.to_json() for s in self.cache.statuses()])

    async def is_verified(self, name: str) -> tuple[bool, str]:
        """(verified, why not) for one dataset; an unknown name is simply not verified."""

        def check() -> tuple[bool, str]:
            try:
                status = self.cache.status(name)
            except (DatasetError, KeyError, ValueError) as exc:
                return False, str(exc)
            if status.verified:
                return True, ""
            doc = status.to_json()
            bad = [f"{f['name']}: {f['state']}" for f in doc.get("files", []) if f.get("state") != "verified"]
            return False, ", ".join(bad) or "not verified"

        return await self._call(check)

    async def require(self, name: str) -> None:
        """Raise DatasetUnavailable (409) unless `name` is present and verified."""
        ok, why = await self.is_verified(name)
        if not ok:
            raise DatasetUnavailable(
                f"dataset {name!r} is not available on this server ({why}); {how_to_get(name)}; "
                "or choose a verified dataset (GET /api/datasets)"
            )

    async def default_dataset(self) -> str:
        """The first verified dataset in DATASET_PREFERENCE; DatasetUnavailable when none is."""
        for name in DATASET_PREFERENCE:
            ok, _ = await self.is_verified(name)
            if ok:
                return name
        raise DatasetUnavailable(f"no dataset is verified on this server; {how_to_get()}")

    async def verified_names(self) -> tuple[list[str], dict[str, str]]:
        """(verified dataset names, {unverified name: why}) over DATASET_PREFERENCE."""
        good: list[str] = []
        bad: dict[str, str] = {}
        for name in DATASET_PREFERENCE:
            ok, why = await self.is_verified(name)
            if ok:
                good.append(name)
            else:
                bad[name] = why
        return good, bad

    async def status_json(self, name: str) -> dict[str, Any]:
        """One dataset's status document (DatasetUnavailable-free: unknown names raise DatasetFileNotFound)."""

        def one() -> dict[str, Any]:
            try:
                return dict(self.cache.status(name).to_json())
            except (DatasetError, KeyError, ValueError) as exc:
                raise DatasetFileNotFound(f"unknown dataset {name!r}: {exc}") from exc

        return await self._call(one)

    async def file_path(self, name: str, filename: str) -> Path:
        """A verified cached file; 404 for a name the manifest does not list, 409 when it is not verified."""
        doc = await self.status_json(name)
        listed = {f["name"] for f in doc.get("files", [])}
        if filename not in listed:
            raise DatasetFileNotFound(
                f"dataset {name!r} has no file {filename!r}; its files are: {', '.join(sorted(listed)) or 'none'}"
            )

        def locate() -> Path:
            try:
                return Path(self.cache.file_path(name, filename))
            except DatasetError as exc:
                raise DatasetUnavailable(f"dataset file {name}/{filename} is not verified: {exc}") from exc

        return await self._call(locate)

    def close(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
