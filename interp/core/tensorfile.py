"""A safetensors file written row block by row block, resumable and atomic.

`safetensors.torch.save_file` needs every tensor in memory at once; activation caches of large
prompt sets do not fit. The format is simple (8-byte header length, JSON header, raw little-endian
data), so the file is laid out up front at its final size under a `.partial` name, rows are
written in place as batches finish, and the file is renamed to its final name when complete.
The result is a standard safetensors file (`safetensors.safe_open` reads it).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

_DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("float16"): "F16"}


class RowWriter:
    """Writes first-axis slices of fixed-shape tensors into a preallocated safetensors file."""

    def __init__(
        self,
        path: str | os.PathLike,
        tensors: dict[str, tuple[np.dtype, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = metadata
        self._layout: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
        offset = 0
        for name, (dtype, shape) in tensors.items():
            dtype = np.dtype(dtype)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            header[name] = {
                "dtype": _DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            self._layout[name] = (dtype, tuple(shape), offset)
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._data_start = 8 + len(blob)
        total = self._data_start + offset
        if resume and self.partial.exists() and self.partial.stat().st_size == total:
            with open(self.partial, "rb") as f:
                if f.read(self._data_start) != struct.pack("<Q", len(blob)) + blob:
                    resume = False
        else:
            resume = False
        if not resume:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            with open(self.partial, "wb") as f:
                f.write(struct.pack("<Q", len(blob)))
                f.write(blob)
                f.truncate(total)
        self.resumed = resume
        self._file = open(self.partial, "r+b")  # noqa: SIM115 - closed in finish()/close()

    def write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        dtype, shape, offset = self._layout[name]
        rows = np.ascontiguousarray(rows, dtype=dtype)
        if rows.shape[1:] != shape[1:] or start < 0 or start + rows.shape[0] > shape[0]:
            raise ValueError(f"rows {rows.shape} at {start} do not fit {name}{list(shape)}")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._file.seek(self._data_start + offset + start * row_bytes)
        self._file.write(rows.astype(dtype.newbyteorder("<"), copy=False).tobytes())

    def flush(self) -> None:
        """Make written rows durable before progress that claims them is recorded."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def finish(self) -> Path:
        self.flush()
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
