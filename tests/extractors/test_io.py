"""Atomic writes and scoped thread counts shared by the stages."""

from __future__ import annotations

import os
import stat

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
