"""Small helpers shared by the stages: atomic file writes, scoped torch thread counts, heap settings."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(temporary_path)`` and renames the result onto ``path``.

    Readers see the old file or the whole new one, never half of it; a failed write leaves nothing
    behind. The temporary file sits beside ``path`` (same filesystem, so the rename is atomic) and has a
    unique name, so concurrent writers do not clobber each other's half-written files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        # mkstemp makes the file 0600; give it the mode a plain open() would (an existing file keeps its own).
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere it can only be read by setting it (briefly)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with ``count`` intra-op threads (None: unchanged), then restores the setting.

    Small recurrent models (silero, the GE2E LSTM) step through time with tiny matrix products:
    one thread avoids the synchronisation cost, which on a busy 2-core machine made a 3-layer
    LSTM over 86 windows take 4.3 s with two threads against 0.19 s with one.
    """
    import torch  # here, so the file helpers do not load torch (commands that only read JSON start fast)

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def return_freed_memory() -> None:
    """Hands the C heap's free pages back to the system (glibc ``malloc_trim``; nothing elsewhere).

    Over a long pass the variable-size tensors of MTCNN (pyramids, crop batches) fragment glibc's heap and
    the freed memory stays resident: the detector alone grew from 293 to 713 MB over 3 minutes of video,
    376 MB when trimmed after each batch, at no cost in time (measured; a fixed mmap threshold kept it at
    402 MB but made the visual pass 1.4x slower; see :func:`map_large_allocations` for a higher one).
    Called between batches and stages.
    """
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter number (malloc.h)


def map_large_allocations(min_bytes: int) -> bool:
    """Allocations of at least ``min_bytes`` get their own memory mapping, handed back when freed (glibc
    ``mallopt(M_MMAP_THRESHOLD)``, for the whole process); False where that cannot be set (not glibc).

    glibc's own threshold slides up to 32 MB as large blocks are freed, so over a long run the models'
    multi-MB activations land in the heap, where fragmentation between a batch's many sizes keeps them
    resident: the visual pass's peak grew with the video's length (667 to 1021 MB over 10 minutes). A fixed
    threshold keeps them out of the heap (benchmarks/results/pipeline_run.md for its cost).
    """
    if min_bytes < 1:
        raise ValueError("min_bytes must be at least 1")
    mallopt = _libc_function("mallopt")
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, int(min_bytes)) == 1)


@cache
def _libc_function(name: str):
    import ctypes
    import ctypes.util

    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None
