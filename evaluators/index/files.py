"""Files of an index build that are written piece by piece: raw spill files and ``.npy`` / text outputs.

``Spill`` is an append-only file of one dtype, read back in slices; ``NpyWriter`` writes a ``.npy`` file whose
length and dtype are known up front, in pieces, producing the same bytes as ``np.save`` of the whole array;
``TextWriter`` writes lines. The writers record size and CRC32 as they go, so the manifest needs no second
pass over the data.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

#: Elements converted and written at a time when copying a spill into its final file.
COPY_PIECE = 1 << 22


def npy_header(dtype, n: int) -> bytes:
    """The header ``np.save`` writes for a 1-D C-ordered array of ``n`` items of ``dtype``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": False, "shape": (int(n),)})
    return buf.getvalue()


class _Checksummed:
    """A binary file opened for writing that keeps its size and CRC32."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "wb")
        self.size = 0
        self.crc = 0

    def _write(self, data) -> None:
        mv = memoryview(data).cast("B")
        self._f.write(mv)
        self.crc = zlib.crc32(mv, self.crc)
        self.size += len(mv)

    def close(self) -> dict:
        """Close; returns the file's signature as the manifest records it."""
        if not self._f.closed:
            self._f.close()
        return {"size": self.size, "crc32": self.crc}


class NpyWriter(_Checksummed):
    """A ``.npy`` file of ``n`` items of ``dtype``, written in order by ``write``; complete when ``n`` were."""

    def __init__(self, path: Path, dtype, n: int):
        super().__init__(path)
        self.dtype = np.dtype(dtype)
        self.n = int(n)
        self.written = 0
        self._write(npy_header(self.dtype, n))

    def write(self, values: np.ndarray) -> None:
        a = np.ascontiguousarray(values, dtype=self.dtype)
        if self.written + len(a) > self.n:
            raise ValueError(f"{self.path.name}: more than the {self.n} items declared")
        self._write(a)
        self.written += len(a)

    def close(self) -> dict:
        if self.written != self.n:
            self._f.close()
            raise ValueError(f"{self.path.name}: {self.written} items written, {self.n} declared")
        return super().close()


class TextWriter(_Checksummed):
    """A UTF-8 text file of lines (a newline inside a line becomes a space, as ``write_index`` writes them)."""

    def write_lines(self, lines) -> None:
        text = "".join(line.replace("\n", " ") + "\n" for line in lines)
        self._write(text.encode("utf-8"))


class Spill:
    """An append-only raw file of one dtype (a temporary of the build), read back in slices."""

    def __init__(self, path: Path, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.n = 0
        self._f = open(self.path, "wb")

    def append(self, values: np.ndarray) -> None:
        a = np.ascontiguousarray(values, dtype=self.dtype)
        self._f.write(memoryview(a).cast("B"))
        self.n += len(a)

    def finish(self) -> "Spill":
        """Close for writing (reads need it); returns self."""
        if not self._f.closed:
            self._f.close()
        return self

    def read(self, start: int, count: int) -> np.ndarray:
        """Items ``start`` .. ``start + count`` (an ordinary in-memory array)."""
        self.finish()
        if count <= 0:
            return np.zeros(0, dtype=self.dtype)
        with open(self.path, "rb") as f:
            return np.fromfile(f, dtype=self.dtype, count=count, offset=int(start) * self.dtype.itemsize)

    def copy_to(self, writer: NpyWriter, piece: int = COPY_PIECE) -> None:
        """Append all items to ``writer``, converted to its dtype ``piece`` items at a time."""
        for start in range(0, self.n, piece):
            writer.write(self.read(start, min(piece, self.n - start)))

    def remove(self) -> None:
        self.finish()
        try:
            os.unlink(self.path)
        except OSError:
            pass
