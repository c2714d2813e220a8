"""The stage cache of ``pipeline run``: finished stages are reused, an interrupted run resumes.

Each stage result lives in the output folder's ``.stages/`` as ``<stage>.json`` (plain data from the
stage's ``serialize()``) and, when it has arrays, ``<stage>.npz``; an array too large to hold (an hour's
acoustic frames) is written by the stage a slice at a time through :meth:`StageCache.array_writer` into
``<stage>.<name>.npy`` and read back a slice at a time (:class:`extractors.disk_arrays.RowsOnDisk`).
Its key is the SHA-256 of the input file's content, the stage's settings, the versions of the models it
uses and the keys of the stages it reads: change any of them and the stage (and everything after it) runs
again. The arrays are written first and the JSON, which names the key and the arrays' digests, last, each
atomically: a result is there whole or not at all, so a run killed mid-stage resumes at that stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractors.disk_arrays import RowsOnDisk, RowsWriter
from extractors.io import return_freed_memory, write_atomically
from pipeline.errors import UserError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stage_key(stage: str, input_sha256: str, settings: Any, models: dict[str, str], upstream: Iterable[str]) -> str:
    """Deterministic key of one stage's result."""
    document = {"format": CACHE_FORMAT, "stage": stage, "input": input_sha256, "settings": settings,
                "models": dict(sorted(models.items())), "upstream": list(upstream)}
    text = json.dumps(document, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_key(data: Any) -> str:
    """SHA-256 of JSON data: the key of an intermediate result that is cheap to recompute but read later."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _arrays_digest(path: Path) -> str:
    return file_sha256(path)


@dataclass
class StageRecord:
    seconds: float
    cached: bool
    key: str

    def serialize(self) -> dict:
        return {"seconds": round(self.seconds, 3), "cached": self.cached, "key": self.key}


@dataclass
class StageCache:
    folder: Path
    force: bool = False                                   # recompute every stage (results are replaced)
    records: dict[str, StageRecord] = field(default_factory=dict)
    on_stage_done: Callable[[str, StageRecord], None] | None = None  # hook, e.g. for tests and progress

    def _paths(self, stage: str) -> tuple[Path, Path]:
        return self.folder / f"{stage}.json", self.folder / f"{stage}.npz"

    def _file_path(self, stage: str, name: str) -> Path:
        return self.folder / f"{stage}.{name}.npy"

    def array_writer(self, stage: str, name: str, shape: tuple[int, ...], dtype=np.float32) -> RowsWriter:
        """A file for one large array of ``stage``'s result, written a slice at a time; the stage returns the
        writer among its arrays and :meth:`store` puts the file in place (read back as a RowsOnDisk)."""
        return RowsWriter(self.folder / f".{stage}.{name}.npy.{os.getpid()}.partial", shape, dtype)

    def load(self, stage: str, key: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The stored (data, arrays) of ``stage`` when its key matches, else None."""
        return None if self.force else self._read(stage, key)

    def stored_arrays(self, stage: str, key: str) -> dict[str, np.ndarray | RowsOnDisk]:
        """The arrays of a result :meth:`run` gave in this run (read back, so nobody holds them in between;
        arrays written through :meth:`array_writer` are read a slice at a time)."""
        stored = self._read(stage, key)
        if stored is None:
            raise UserError(f"the {stage} stage's result in {self.folder} was removed or changed during the run "
                            "(is another run writing to the same output folder?)")
        return stored[1]

    def _read(self, stage: str, key: str) -> tuple[dict, dict[str, np.ndarray | RowsOnDisk]] | None:
        meta_path, arrays_path = self._paths(stage)
        if not meta_path.is_file():
            return None
        try:
            document = json.loads(meta_path.read_text(encoding="utf-8"))
            if document.get("key") != key or document.get("format") != CACHE_FORMAT:
                return None
            arrays: dict[str, np.ndarray | RowsOnDisk] = {}
            if document.get("arrays_sha256"):
                if not arrays_path.is_file() or _arrays_digest(arrays_path) != document["arrays_sha256"]:
                    return None
                with np.load(arrays_path, allow_pickle=False) as stored:
                    arrays = {name: stored[name] for name in stored.files}
            for name, digest in document.get("files", {}).items():
                path = self._file_path(stage, name)
                if not path.is_file() or _arrays_digest(path) != digest:
                    return None
                arrays[name] = RowsOnDisk.npy(path)
            return document["data"], arrays
        except (OSError, ValueError, KeyError) as error:  # unreadable cache entry: recompute, never crash
            log.warning("stage cache %s unreadable (%s); recomputing", meta_path, error)
            return None

    def holds(self, stage: str, key: str) -> bool:
        """Whether :meth:`run` would reuse a stored result (reads only the small JSON, not the arrays)."""
        meta_path, arrays_path = self._paths(stage)
        if self.force or not meta_path.is_file():
            return False
        try:
            document = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (document.get("key") == key and document.get("format") == CACHE_FORMAT
                and (not document.get("arrays_sha256") or arrays_path.is_file())
                and all(self._file_path(stage, name).is_file() for name in document.get("files", {})))

    def store(self, stage: str, key: str, data: dict, arrays: dict[str, np.ndarray | RowsWriter] | None = None
              ) -> dict[str, np.ndarray | RowsOnDisk]:
        """Stores a result (arrays first, the JSON last); returns its arrays, files as their readers."""
        meta_path, arrays_path = self._paths(stage)
        arrays = dict(arrays or {})
        in_memory = {name: a for name, a in arrays.items() if not isinstance(a, RowsWriter)}
        digest = None
        if in_memory:
            write_atomically(arrays_path, lambda temporary: _save_npz(temporary, in_memory))
            digest = _arrays_digest(arrays_path)
        files = {}
        for name, writer in arrays.items():
            if isinstance(writer, RowsWriter):
                writer.close()
                path = self._file_path(stage, name)
                os.replace(writer.path, path)
                files[name] = _arrays_digest(path)
                arrays[name] = RowsOnDisk.npy(path)
        document = {"format": CACHE_FORMAT, "stage": stage, "key": key, "arrays_sha256": digest, "data": data}
        if files:
            document["files"] = files
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
        write_atomically(meta_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
        if not in_memory:
            arrays_path.unlink(missing_ok=True)   # an earlier result's arrays, no longer named by the JSON
        for stale in self.folder.glob(f"{stage}.*.npy"):
            if stale.name[len(stage) + 1: -len(".npy")] not in files:
                stale.unlink(missing_ok=True)
        return arrays

    def run(self, stage: str, key: str, compute: Callable[[], tuple[dict, dict[str, np.ndarray]]]
            ) -> tuple[dict, dict[str, np.ndarray]]:
        """The stage's (data, arrays): from the cache when the key matches, else computed and stored."""
        started = time.perf_counter()
        stored = self.load(stage, key)
        if stored is not None:
            record = StageRecord(time.perf_counter() - started, True, key)
            log.info("%s: reused from the stage cache", stage)
            result = stored
        else:
            try:
                data, arrays = compute()
            except BaseException:
                for partial in self.folder.glob(f".{stage}.*.{os.getpid()}.partial"):   # a file it was writing
                    partial.unlink(missing_ok=True)
                raise
            return_freed_memory()  # what the stage freed leaves the process before the next stage grows
            arrays = self.store(stage, key, data, arrays)
            record = StageRecord(time.perf_counter() - started, False, key)
            log.info("%s: %.1f s", stage, record.seconds)
            result = (data, arrays)
        self.records[stage] = record
        if self.on_stage_done is not None:
            self.on_stage_done(stage, record)
        return result


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
