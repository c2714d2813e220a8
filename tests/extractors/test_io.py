"""Atomic writes and scoped thread counts shared by the stages."""

from __future__ import annotations

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
