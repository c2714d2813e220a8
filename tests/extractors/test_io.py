"""Atomic writes, scoped thread counts and the C heap settings shared by the stages."""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from extractors.io import torch_threads, write_atomically


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "turns.rttm"
    write_atomically(target, lambda temporary: temporary.write_text("old\n"))
    assert target.read_text() == "old\n"

    def half_then_fail(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["turns.rttm"]


def test_torch_threads_is_scoped_even_on_error():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with pytest.raises(RuntimeError):
        with torch_threads(wanted):
            assert torch.get_num_threads() == wanted
            raise RuntimeError("stage failed")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_permissions_the_umask_gives(tmp_path, umask):
    # mkstemp makes its file 0600; a checkpoint, RTTM or JSON must be as readable as any other new file.
    previous = os.umask(umask)
    try:
        target = write_atomically(tmp_path / "turns.rttm", lambda temporary: temporary.write_text("x\n"))
        plain = tmp_path / "plain.txt"
        plain.write_text("x\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask == stat.S_IMODE(plain.stat().st_mode)


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    target = write_atomically(tmp_path / "config.json", lambda temporary: temporary.write_text("{}"))
    target.chmod(0o640)
    write_atomically(target, lambda temporary: temporary.write_text('{"a": 1}'))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == '{"a": 1}'


_HEAP_OR_MAP = """
import sys
import numpy as np
from extractors.io import map_large_allocations
if sys.argv[1] == "fixed":
    assert map_large_allocations(1 << 20)
big = np.ones(24 << 20, np.uint8)   # freeing a mapped 24 MB block raises glibc's own threshold to 24 MB
del big
block = np.ones(8 << 20, np.uint8)
address = block.ctypes.data
for line in open("/proc/self/maps"):
    span, *rest = line.split()
    low, high = (int(v, 16) for v in span.split("-"))
    if low <= address < high:
        print("heap" if rest[-1] == "[heap]" else "mapped")
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists() or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt and /proc/self/maps")
def test_large_allocations_stay_out_of_the_heap_once_the_threshold_is_fixed():
    """glibc's sliding threshold puts an 8 MB block in the heap after a 24 MB one was freed (where the
    heap's fragmentation keeps it resident); the fixed threshold gives it its own mapping."""
    def where(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", _HEAP_OR_MAP, mode], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[2])
        return done.stdout.strip()

    assert where("sliding") == "heap"
    assert where("fixed") == "mapped"
