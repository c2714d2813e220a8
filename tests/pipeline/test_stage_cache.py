"""The stage cache: keys, whole-or-nothing entries, --force."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.stage_cache import StageCache, stage_key


def test_key_depends_on_every_input():
    base = stage_key("asr", "a" * 64, {"beam": 1}, {"whisper": "package:1"}, ["k1"])
    assert base == stage_key("asr", "a" * 64, {"beam": 1}, {"whisper": "package:1"}, ["k1"])
    assert base != stage_key("asr", "b" * 64, {"beam": 1}, {"whisper": "package:1"}, ["k1"])
    assert base != stage_key("asr", "a" * 64, {"beam": 5}, {"whisper": "package:1"}, ["k1"])
    assert base != stage_key("asr", "a" * 64, {"beam": 1}, {"whisper": "cache:2"}, ["k1"])
    assert base != stage_key("asr", "a" * 64, {"beam": 1}, {"whisper": "package:1"}, ["k2"])


def test_round_trip_reuse_and_force(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"n": 3}, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}

    cache = StageCache(tmp_path)
    data, arrays = cache.run("stage", "k", compute)
    again, again_arrays = StageCache(tmp_path).run("stage", "k", compute)
    assert len(calls) == 1 and again == data and np.array_equal(again_arrays["x"], arrays["x"])
    StageCache(tmp_path).run("stage", "other-key", compute)
    assert len(calls) == 2
    StageCache(tmp_path, force=True).run("stage", "other-key", compute)
    assert len(calls) == 3


def test_damaged_arrays_are_recomputed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {}, {"x": np.ones(100, np.float32)}

    StageCache(tmp_path).run("stage", "k", compute)
    (tmp_path / "stage.npz").write_bytes(b"half a file")
    StageCache(tmp_path).run("stage", "k", compute)
    assert len(calls) == 2


def test_a_later_stage_reads_back_the_arrays_this_run_stored(tmp_path):
    frames = np.arange(12, dtype=np.float32).reshape(4, 3)
    cache = StageCache(tmp_path, force=True)   # --force recomputes, but what this run stored is read back
    cache.run("acoustic", "k", lambda: ({"frame_rate": 50.0}, {"frames": frames}))
    assert np.array_equal(cache.stored_arrays("acoustic", "k")["frames"], frames)
    (tmp_path / "acoustic.npz").unlink()
    with pytest.raises(UserError, match="removed or changed during the run"):
        cache.stored_arrays("acoustic", "k")


def test_a_large_array_goes_to_its_own_file_and_is_read_back_in_slices(tmp_path):
    from extractors.disk_arrays import RowsOnDisk

    frames = np.arange(40, dtype=np.float32).reshape(10, 4)
    calls = []

    def compute(cache):
        calls.append(1)
        writer = cache.array_writer("acoustic", "frames", frames.shape)
        for first in range(0, 10, 3):
            writer[first: first + 3] = frames[first: first + 3]
        return {"frame_rate": 50.0}, {"frames": writer, "small": np.ones(2)}

    cache = StageCache(tmp_path)
    data, arrays = cache.run("acoustic", "k", lambda: compute(cache))
    assert isinstance(arrays["frames"], RowsOnDisk) and np.array_equal(arrays["frames"][2:5], frames[2:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acoustic.frames.npy", "acoustic.json", "acoustic.npz"]
    stored = StageCache(tmp_path).stored_arrays("acoustic", "k")
    assert isinstance(stored["frames"], RowsOnDisk) and np.array_equal(stored["frames"][:], frames)
    assert np.array_equal(stored["small"], np.ones(2))
    assert StageCache(tmp_path).holds("acoustic", "k")
    StageCache(tmp_path).run("acoustic", "k", lambda: compute(cache))
    assert len(calls) == 1                       # reused
    np.save(tmp_path / "acoustic.frames.npy", frames + 1)   # changed: its digest no longer matches
    StageCache(tmp_path).run("acoustic", "k", lambda: compute(cache))
    assert len(calls) == 2
    (tmp_path / "acoustic.frames.npy").unlink()
    assert not StageCache(tmp_path).holds("acoustic", "k")


def test_a_stage_that_fails_while_writing_a_large_array_leaves_no_partial_file(tmp_path):
    cache = StageCache(tmp_path)

    def compute():
        writer = cache.array_writer("acoustic", "frames", (10, 4))
        writer[0:2] = np.ones((2, 4))
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        cache.run("acoustic", "k", compute)
    assert list(tmp_path.iterdir()) == []


def test_a_result_stored_again_leaves_no_file_of_the_one_it_replaced(tmp_path):
    cache = StageCache(tmp_path, force=True)

    def on_disk():
        writer = cache.array_writer("acoustic", "frames", (4, 2))
        writer[0:4] = np.ones((4, 2))
        return {}, {"frames": writer}

    cache.run("acoustic", "k", on_disk)
    cache.run("acoustic", "k", lambda: ({}, {"frames": np.ones((4, 2))}))    # e.g. another checkpoint's features
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acoustic.json", "acoustic.npz"]
    cache.run("acoustic", "k", on_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acoustic.frames.npy", "acoustic.json"]
