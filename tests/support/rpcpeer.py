"""A hostile llama.cpp RPC peer on loopback: it passes the HELLO handshake (harness.llama.rpc.probe's bytes,
protocol 7.0.0) and then misbehaves, the way a crashed, buggy or malicious server would.

Modes:
- "close": hang up on the first command after the HELLO;
- "garbage": answer every command after the HELLO with bytes that are no RPC response;
- "proxy": relay to a real server (``upstream``, "host:port") and hang up after ``cut_after_bytes`` of
  the client's requests on one connection: a server dying in the middle of a model load.

`with RpcPeer("close") as peer:` serves on a free port (``peer.endpoint``) from a thread of this process,
one thread per connection; leaving the block closes everything.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from types import TracebackType

from harness.llama.rpc import RPC_PROTO_MAJOR, RPC_PROTO_MINOR

HELLO = 14
CONN_CAPS_SIZE = 24
HELLO_REPLY = struct.pack("<Q", 4 + CONN_CAPS_SIZE) + bytes([RPC_PROTO_MAJOR, RPC_PROTO_MINOR, 0, 0]) + bytes(24)


class RpcPeer:
    def __init__(self, mode: str, upstream: str | None = None, cut_after_bytes: int = 4096) -> None:
        if mode not in ("close", "garbage", "proxy"):
            raise ValueError(f"unknown mode {mode!r}")
        if (mode == "proxy") != (upstream is not None):
            raise ValueError("an upstream is for the proxy mode, which needs one")
        self.mode = mode
        self.upstream = upstream
        self.cut_after_bytes = cut_after_bytes
        self.commands: list[int] = []  # the commands received after a HELLO ("close" and "garbage")
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self.port = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closed = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RpcPeer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        for s in [self._server, *self._open]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._open.append(conn)
            target = self._relay if self.mode == "proxy" else self._misbehave
            threading.Thread(target=target, args=(conn,), daemon=True).start()

    def _misbehave(self, conn: socket.socket) -> None:
        try:
            cmd, _ = _read_request(conn)
            if cmd != HELLO:
                return
            conn.sendall(HELLO_REPLY)
            while True:
                cmd, _ = _read_request(conn)
                self.commands.append(cmd)
                if self.mode == "close":
                    return
                conn.sendall(struct.pack("<Q", 0xFFFF_FFFF_FFFF) + os.urandom(64))
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def _relay(self, conn: socket.socket) -> None:
        host, _, port = self.upstream.rpartition(":")
        try:
            up = socket.create_connection((host, int(port)), timeout=30)
        except OSError:
            conn.close()
            return
        self._open.append(up)
        up.settimeout(None)

        def downstream() -> None:  # the server's answers, as they are
            try:
                while chunk := up.recv(65536):
                    conn.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=downstream, daemon=True).start()
        sent = 0
        try:
            while chunk := conn.recv(65536):
                if sent + len(chunk) > self.cut_after_bytes:
                    break  # the server "dies": both sides hang up mid-conversation
                up.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (conn, up):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(min(n - len(data), 1 << 20))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_request(conn: socket.socket) -> tuple[int, int]:
    """One request (command byte, u64 size, payload): its command and payload size; the payload is read and
    dropped."""
    cmd = _read_exactly(conn, 1)[0]
    (size,) = struct.unpack("<Q", _read_exactly(conn, 8))
    remaining = size
    while remaining:
        remaining -= len(_read_exactly(conn, min(remaining, 1 << 20)))
    return cmd, size
