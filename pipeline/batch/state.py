"""What a batch remembers between runs, so a rerun or a restart after a kill redoes nothing finished.

- ``OUT/<show>/<episode>/batch.json`` (the stamp): the video's size, mtime and SHA-256 and the digest of the
  settings that made the timeline. An episode is finished when its timeline validates and was made from the
  same video bytes (and, when stamped, the same settings); the stamp spares hashing an unchanged video.
- ``OUT/failures.jsonl``: one line per failed attempt (path, stage, error, time, attempt, ...), appended
  across runs. An episode whose last attempt failed for good on the same file and settings (a corrupt
  video) is not retried by the next run unless asked (``--retry-failed``).
- ``OUT/.batch.lock``: one batch at a time per OUT (an flock, released by the kernel when the holder dies).

Every file is replaced atomically; temporary files a killed run left are removed before the next starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from extractors.io import write_atomically
from pipeline.errors import UserError

log = logging.getLogger(__name__)

STAMP_NAME = "batch.json"
FAILURES_NAME = "failures.jsonl"
INDEX_NAME = "index.json"
LOCK_NAME = ".batch.lock"
_LEFTOVER = re.compile(r"^\.(.+\.[^.]+\.tmp|write-test-\d+)$")   # write_atomically's and check_output's files


def settings_digest(config: dict, checkpoint: str | None, cast_sha256: str | None) -> str:
    """What, besides the video, decides a timeline: the configuration (not the device), checkpoint, cast."""
    config = {k: v for k, v in config.items() if k != "device"}
    text = json.dumps({"config": config, "checkpoint": checkpoint, "cast": cast_sha256}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        stat = path.stat()
        return cls(stat.st_size, stat.st_mtime_ns)


def write_json(path: Path, document: dict | list) -> Path:
    text = json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(folder: Path, video: Path, sha256: str, settings: str, seconds: float) -> None:
    stat = FileStat.of(video)
    write_json(folder / STAMP_NAME, {"video": str(video), "size": stat.size, "mtime_ns": stat.mtime_ns,
                                     "sha256": sha256, "settings": settings, "seconds": round(seconds, 3),
                                     "finished": _now()})


def known_sha256(video: Path, stamp: dict | None, stat: FileStat) -> str | None:
    """The video's SHA-256 as last recorded, when its size and mtime have not changed since."""
    if stamp and stamp.get("size") == stat.size and stamp.get("mtime_ns") == stat.mtime_ns:
        sha = stamp.get("sha256")
        return sha if isinstance(sha, str) else None
    return None


def finished_timeline(folder: Path, video: Path, settings: str) -> dict | None:
    """The episode's timeline when it is finished (valid, same video bytes, same settings), else None."""
    from pipeline.run import TIMELINE_NAME
    from pipeline.stage_cache import file_sha256
    from pipeline.timeline import read_timeline

    path = folder / TIMELINE_NAME
    if not path.is_file():
        return None
    stamp = read_stamp(folder)
    if stamp is not None and stamp.get("settings") != settings:
        log.info("%s: settings changed since its timeline was made; recomputing", folder)
        return None
    try:
        document = read_timeline(path)
    except UserError as error:
        log.warning("%s: %s; recomputing", folder, error)
        return None
    sha = known_sha256(video, stamp, FileStat.of(video)) or file_sha256(video)
    if document["video"]["sha256"] != sha:
        log.info("%s: the video changed since its timeline was made; recomputing", folder)
        return None
    return document


# ------------------------------------------------------------------------------------------ failures


class FailureLog:
    """``OUT/failures.jsonl``: appended one whole line per failed attempt (a torn last line is ignored)."""

    def __init__(self, out: Path):
        self.path = out / FAILURES_NAME

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:   # one write of one line: O_APPEND keeps it whole
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[dict]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue   # a line a kill cut short
            if isinstance(record, dict):
                records.append(record)
        return records

    def last_by_video(self) -> dict[str, dict]:
        last: dict[str, dict] = {}
        for record in self.records():
            if isinstance(record.get("path"), str):
                last[record["path"]] = record
        return last


def failed_for_good(record: dict | None, video: Path, settings: str) -> bool:
    """Whether ``record`` (the video's last failure) says it fails whatever we retry: same bytes, same settings."""
    if not record or not record.get("final") or record.get("transient"):
        return False
    if record.get("settings") != settings:
        return False
    try:
        stat = FileStat.of(video)
    except OSError:
        return False
    return record.get("size") == stat.size and record.get("mtime_ns") == stat.mtime_ns


# ------------------------------------------------------------------------------------ lock, leftovers


class BatchLock:
    """An exclusive lock on OUT so two batches never write the same episodes at once."""

    def __init__(self, out: Path):
        self.path = out / LOCK_NAME
        self.handle = None

    def __enter__(self) -> BatchLock:
        try:
            import fcntl
        except ImportError:   # not POSIX: no lock
            return self
        self.handle = self.path.open("a")
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            self.handle = None
            raise UserError(f"another batch is writing to {self.path.parent}; wait for it or use another -o") from None
        return self

    def __exit__(self, *exc) -> bool:
        if self.handle is not None:
            self.handle.close()   # closing releases the flock
        return False


def remove_leftovers(folder: Path) -> int:
    """Deletes the temporary files of writes a killed run never finished (``.<name>.<random>.tmp``)."""
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.rglob(".*"):
        if path.is_file() and _LEFTOVER.match(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
