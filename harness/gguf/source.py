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
            # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever; it changes
            # nothing for a regular file, and anything else is refused below before a byte is read
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
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
            raise GGUFError(f"{self.name}: is {file_kind(st.st_mode)}, not a GGUF file")
        os.set_blocking(self._fd, True)
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


def file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for messages: 'a named pipe (FIFO)', 'a device'…"""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


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
