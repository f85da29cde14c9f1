"""Random-access byte sources the header reader streams from.

A source knows the total size of the file it stands for and returns the bytes of a range. A
local file is one; a Hugging Face Hub file read through HTTP ranges is another (harness.hub).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from harness.errors import GGUFError


class ByteSource(Protocol):
    """What the header reader needs: a name for messages, a total size, and ranged reads."""

    name: str

    @property
    def size_bytes(self) -> int:
        """Total size of the file this source stands for (not of what has been fetched)."""

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; fewer only at the end of the file."""


class FileSource:
    """A local file, read with pread so that nothing is mapped and nothing is read twice."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise GGUFError(f"{self.name}: no such file") from None
        except IsADirectoryError:
            raise GGUFError(f"{self.name}: is a directory, not a GGUF file") from None
        except OSError as exc:
            raise GGUFError(f"{self.name}: cannot open: {exc.strerror}") from None
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self._fd)
            self._fd = -1
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise GGUFError(f"{self.name}: is {kind}, not a GGUF file")
        self._size = st.st_size
        self.bytes_read = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def read(self, offset: int, n: int) -> bytes:
        if n <= 0 or offset >= self._size:
            return b""
        try:
            data = os.pread(self._fd, min(n, self._size - offset), offset)
        except OSError as exc:
            raise GGUFError(f"{self.name}: read error at byte {offset}: {exc.strerror}") from None
        self.bytes_read += len(data)
        return data

    def readinto(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` from ``offset`` without an intermediate copy; returns the bytes read."""
        try:
            n = os.preadv(self._fd, [view], offset)
        except OSError as exc:
            raise GGUFError(f"{self.name}: read error at byte {offset}: {exc.strerror}") from None
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)


class BytesSource:
    """An in-memory file (tests, and prefixes fetched over HTTP). ``size_bytes`` may exceed the data
    held when the data is only a prefix of a larger file."""

    def __init__(self, data: bytes, name: str = "<bytes>", size_bytes: int | None = None) -> None:
        self._data = bytes(data)
        self.name = name
        self._size = len(self._data) if size_bytes is None else size_bytes

    @property
    def size_bytes(self) -> int:
        return self._size

    def read(self, offset: int, n: int) -> bytes:
        return self._data[offset : offset + max(n, 0)]
