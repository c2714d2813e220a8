"""Arrays on disk read and written a slice of rows at a time (what keeps an hour's audio out of memory)."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.disk_arrays import RowsOnDisk, RowsWriter


def test_written_in_slices_reads_back_as_the_array(tmp_path):
    array = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    with RowsWriter(tmp_path / "a.npy", array.shape) as writer:
        for first in range(0, 1000, 300):
            writer[first: first + 300] = array[first: first + 300]
    assert np.array_equal(np.load(tmp_path / "a.npy"), array)   # a plain .npy file
    rows = RowsOnDisk.npy(tmp_path / "a.npy")
    assert rows.shape == array.shape and len(rows) == 1000 and rows.dtype == np.float32
    for key in (slice(5, 17), slice(None), slice(990, 2000), slice(-3, None), slice(600, 500)):
        assert np.array_equal(rows[key], array[key]), key
    assert np.array_equal(rows[999], array[999]) and np.array_equal(rows[-1], array[-1])
    assert [first for first, _ in rows.blocks(400)] == [0, 400, 800]
    assert np.array_equal(np.concatenate([b for _, b in rows.blocks(400)]), array)


def test_rows_never_written_are_zeros_and_wrong_shapes_are_refused(tmp_path):
    writer = RowsWriter(tmp_path / "b.npy", (10, 2))
    writer[2:4] = np.ones((2, 2))
    with pytest.raises(ValueError, match="do not fit"):
        writer[0:3] = np.ones((2, 2))
    with pytest.raises(ValueError, match="step 1"):
        writer[0:4:2] = np.ones((2, 2))
    rows = writer.close()
    assert np.array_equal(rows[:], np.array([[0, 0]] * 2 + [[1, 1]] * 2 + [[0, 0]] * 6, np.float32))


def test_raw_samples_and_a_file_cut_short(tmp_path):
    samples = np.linspace(-1, 1, 5000, dtype=np.float32)
    samples.tofile(tmp_path / "s.f32")
    rows = RowsOnDisk.raw(tmp_path / "s.f32")
    assert len(rows) == 5000 and np.array_equal(rows[100:200], samples[100:200])
    with pytest.raises(ValueError, match="step 1"):
        rows[::2]
    with pytest.raises(IndexError):
        rows[5000]
    (tmp_path / "s.f32").write_bytes(samples[:100].tobytes())   # changed under the reader
    with pytest.raises(OSError, match="ends before"):
        rows[50:200]
