"""Arrays that stay on disk and are read or written a slice of rows at a time.

A long video's audio (230 MB an hour at 16 kHz) and its Whisper encoder states (280 MB an hour) are the
two things that grow with its length and that no stage needs whole at once: each reads a span (a speech
region, a 30 s chunk, a segment). :class:`RowsOnDisk` reads such a span with a plain positioned read, so
only the span is in memory; the file is never mapped (mapped pages count in the process's resident set
while the mapping lives, however few are needed again). It supports ``len()``, ``shape``, ``dtype`` and
slicing like the array it stands for, so a stage that only slices takes either.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class RowsOnDisk:
    """A C-ordered array in a file (a ``.npy`` file or raw samples), read a slice of rows at a time."""

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path = Path(path)
        self.offset = int(offset)                       # bytes before row 0
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        self._row_bytes = self._row_items * self.dtype.itemsize

    @classmethod
    def npy(cls, path: str | os.PathLike) -> RowsOnDisk:
        """The array of a ``.npy`` file (C order, no objects)."""
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            offset = handle.tell()
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{path}: only C-ordered arrays of plain numbers are read in slices")
        return cls(path, offset, shape, dtype)

    @classmethod
    def raw(cls, path: str | os.PathLike, dtype: np.dtype | str = np.float32) -> RowsOnDisk:
        """A file of nothing but 1-d samples of ``dtype``."""
        dtype = np.dtype(dtype)
        return cls(path, 0, (Path(path).stat().st_size // dtype.itemsize,), dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        """Rows ``key`` (a slice with step 1, or one index) read from the file into a new array."""
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} of {len(self)}")
            return self._read(index, index + 1)[0]
        if not isinstance(key, slice):
            raise TypeError(f"{type(self).__name__} reads rows by slice or index, not {type(key).__name__}")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("only slices with step 1 are read from disk")
        return self._read(start, max(start, stop))

    def _read(self, start: int, stop: int) -> np.ndarray:
        rows = stop - start
        if rows <= 0:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        with open(self.path, "rb") as handle:
            data = np.fromfile(handle, self.dtype, count=rows * self._row_items,
                               offset=self.offset + start * self._row_bytes)
        if len(data) != rows * self._row_items:
            raise OSError(f"{self.path} ends before row {stop} (was it changed while being read?)")
        return data.reshape(rows, *self.shape[1:])

    def blocks(self, rows: int):
        """(first row, array of up to ``rows`` rows) over the whole array, in order."""
        for first in range(0, len(self), rows):
            yield first, self[first: first + rows]


class RowsWriter:
    """Writes a ``.npy`` file of a known shape a slice of rows at a time (``writer[a:b] = rows``), so the
    array is never whole in memory; rows never written read as zeros. :meth:`close` it (or use ``with``)."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | str = np.float32):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        self._handle = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self._handle, header)   # version 1.0 holds any shape we write
        self.offset = self._handle.tell()
        self._row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        self._handle.truncate(self.offset + self.shape[0] * self._row_items * self.dtype.itemsize)  # sparse zeros

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, key: slice, rows: np.ndarray) -> None:
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("only slices with step 1 are written")
        rows = np.ascontiguousarray(rows, self.dtype)
        if rows.shape != (max(0, stop - start), *self.shape[1:]):
            raise ValueError(f"rows of shape {rows.shape} do not fit rows {start}:{stop} of {self.shape}")
        self._handle.seek(self.offset + start * self._row_items * self.dtype.itemsize)
        self._handle.write(rows.tobytes())

    def close(self) -> RowsOnDisk:
        """Closes the file; returns its reader."""
        if not self._handle.closed:
            self._handle.close()
        return RowsOnDisk(self.path, self.offset, self.shape, self.dtype)

    def __enter__(self) -> RowsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
