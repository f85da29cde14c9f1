"""llama.cpp's RPC server on this host: lend this machine's CPU backend to a llama.cpp elsewhere.

The server is `ggml_backend_rpc_start_server` from llama-cpp-python's own `libggml-rpc.so`
(built with `-DGGML_RPC=on`), called through ctypes with the CPU device. That C call never returns
while it serves, and a thread blocked in C never sees Python's signal handlers, so the server always
runs in a child process (`python -m harness.llama.rpc`): the parent owns the signals and stops the child.

Facts of this llama.cpp version (ggml/src/ggml-rpc/), worth knowing before relying on a server:

- It serves one client at a time (`listen(fd, 1)`, one accept loop). A second client connects but
  its handshake waits until the first one disconnects.
- The host must be a dotted IPv4 address (`inet_addr`); "localhost" is refused. Port 0 cannot be
  asked of the C server (it would never say which port it got), so a free port is picked here.
- The client side (`ggml_backend_rpc_add_server`) aborts the whole process when it cannot connect,
  so `probe()` checks an endpoint first, with a timeout, using the protocol's own HELLO.
- Never expose it beyond a trusted network: the protocol has no authentication.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import FrameType, TracebackType

from harness.errors import RpcError
from harness.llama import clib
from harness.offload.hardware import GGML_MAX_N_THREADS

GGML_BACKEND_DEVICE_TYPE_CPU = 0
# RPC protocol (ggml-rpc.cpp): HELLO is command 14 "always"; request = cmd byte, u64 size, payload;
# response = u64 size, payload. The payload carries 24 bytes of transport capabilities (all zero: TCP).
_RPC_CMD_HELLO = 14
_RPC_CONN_CAPS_SIZE = 24
_HELLO_RSP_SIZE = 4 + _RPC_CONN_CAPS_SIZE
# ggml-rpc.h of the llama.cpp that llama-cpp-python 0.3.36 vendors; its client aborts on a server
# whose major differs or whose minor is newer
RPC_PROTO_MAJOR, RPC_PROTO_MINOR = 7, 0
_PARENT_ENV = "HARNESS_RPC_PARENT_PID"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RpcVersion:
    major: int
    minor: int
    patch: int


def lib_dir() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise RpcError("llama-cpp-python is not installed; run `make install`")
    return Path(spec.origin).parent / "lib"


@cache
def lib() -> ctypes.CDLL:
    """libggml-rpc.so with the prototypes this module uses (the device calls live in libggml)."""
    folder = lib_dir()
    rpc_path = folder / "libggml-rpc.so"
    if not rpc_path.exists():
        raise RpcError(f"{rpc_path} not found: llama-cpp-python was built without CMAKE_ARGS=-DGGML_RPC=on")
    return clib.declare(
        ctypes.CDLL(os.fspath(rpc_path)),
        {
            "ggml_backend_rpc_start_server": (
                [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)],
                None,
            ),
            "ggml_backend_rpc_add_server": ([ctypes.c_char_p], ctypes.c_void_p),
        },
    )


@cache
def backend_lib() -> ctypes.CDLL:
    """libggml.so with the backend device calls (the device list, memory, RPC server devices)."""
    return clib.declare(
        ctypes.CDLL(os.fspath(lib_dir() / "libggml.so")),
        {
            "ggml_backend_load_all": ([], None),
            "ggml_backend_dev_by_type": ([ctypes.c_int], ctypes.c_void_p),
            "ggml_backend_dev_name": ([ctypes.c_void_p], ctypes.c_char_p),
            "ggml_backend_reg_dev_count": ([ctypes.c_void_p], ctypes.c_size_t),
            "ggml_backend_reg_dev_get": ([ctypes.c_void_p, ctypes.c_size_t], ctypes.c_void_p),
            # the device list (engine.local_gpus)
            "ggml_backend_dev_count": ([], ctypes.c_size_t),
            "ggml_backend_dev_get": ([ctypes.c_size_t], ctypes.c_void_p),
            "ggml_backend_dev_type": ([ctypes.c_void_p], ctypes.c_int),
            "ggml_backend_dev_description": ([ctypes.c_void_p], ctypes.c_char_p),
            "ggml_backend_dev_memory": (
                [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
                None,
            ),
        },
    )


def default_threads() -> int:
    """llama.cpp's rpc-server default: half the hardware threads, at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


def _check_threads(threads: int) -> int:
    if not 1 <= threads <= GGML_MAX_N_THREADS:
        raise RpcError(f"RPC server threads {threads}: ggml runs 1..{GGML_MAX_N_THREADS} threads")
    return threads


def _check_host(host: str) -> None:
    try:
        socket.inet_aton(host)
    except OSError:
        raise RpcError(
            f"RPC host {host!r} is not a dotted IPv4 address (llama.cpp's server takes only those; "
            f"use 127.0.0.1 or 0.0.0.0)"
        ) from None


def run_in_this_process(host: str, port: int, threads: int) -> None:
    """Serve the CPU backend from this process. Returns only if llama.cpp gives up (port taken…)."""
    _check_host(host)
    _check_threads(threads)
    g = backend_lib()
    g.ggml_backend_load_all()
    cpu = g.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
    if not cpu:
        raise RpcError("llama.cpp has no CPU device to serve")
    devices = (ctypes.c_void_p * 1)(cpu)
    lib().ggml_backend_rpc_start_server(f"{host}:{port}".encode(), None, threads, 1, devices)


def probe(host: str, port: int, timeout_s: float = 2.0) -> RpcVersion:
    """Connect and complete the RPC HELLO handshake; return the server's protocol version.

    Raises RpcError if nothing listens, or nothing answers within timeout_s (not an RPC server, or
    one busy with another client). The server goes back to accepting once this connection closes.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack("<BQ", _RPC_CMD_HELLO, _RPC_CONN_CAPS_SIZE) + bytes(_RPC_CONN_CAPS_SIZE))
            reply = b""
            while len(reply) < 8 + _HELLO_RSP_SIZE:
                chunk = sock.recv(8 + _HELLO_RSP_SIZE - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        raise RpcError(
            f"{host}:{port} accepted a connection but gave no RPC handshake within {timeout_s} s "
            f"(busy with another client, or not a llama.cpp RPC server)"
        ) from None
    except OSError as exc:
        raise RpcError(f"cannot connect to an RPC server at {host}:{port}: {exc.strerror or exc}") from None
    if len(reply) != 8 + _HELLO_RSP_SIZE or struct.unpack_from("<Q", reply)[0] != _HELLO_RSP_SIZE:
        raise RpcError(
            f"{host}:{port} answered the RPC handshake with {len(reply)} bytes, not a llama.cpp "
            f"RPC server of a compatible protocol version"
        )
    return RpcVersion(*reply[8:11])


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RpcError(f"RPC endpoint {endpoint!r} is not HOST:PORT (e.g. 127.0.0.1:50052)")
    return host, int(port)


@dataclass(frozen=True)
class RpcDevice:
    """One device a server lends, as this process's llama.cpp knows it.

    `name` is the device name ("RPC0", "RPC1"…: numbered in the order servers were first added in this
    process, across all servers). Buffers on it are printed as "RPC<i>[endpoint]", with i the device's
    index on its own server, so the first device of every server prints as "RPC0[host:port]".
    """

    endpoint: str
    index: int
    name: str
    handle: int  # ggml_backend_dev_t; valid for the life of the process (llama.cpp never frees it)

    @property
    def buffer_name(self) -> str:
        return device_name(self.endpoint, self.index)


_DEVICE_NAME = re.compile(r"RPC\d*\[(?P<endpoint>.+)\]")


def device_name(endpoint: str, index: int | None = None) -> str:
    """How a device of the RPC server at ``endpoint`` is named: llama.cpp prints the buffers on the
    server's device ``index`` as "RPC<index>[endpoint]"; a plan, which counts one device per server,
    names it "RPC[endpoint]" (index None)."""
    return f"RPC{'' if index is None else index}[{endpoint}]"


def endpoint_of(name: str) -> str | None:
    """The endpoint in a device_name (a buffer's or a plan's); None for any other name."""
    m = _DEVICE_NAME.fullmatch(name)
    return m["endpoint"] if m else None


def connect(endpoint: str, timeout_s: float = 5.0) -> tuple[RpcDevice, ...]:
    """The devices an RPC server at endpoint lends, registered with this process's llama.cpp.

    Probes first: llama.cpp's own client aborts the process when a server cannot be reached.
    """
    host, port = split_endpoint(endpoint)
    version = probe(host, port, timeout_s)
    if version.major != RPC_PROTO_MAJOR or version.minor > RPC_PROTO_MINOR:
        raise RpcError(
            f"the RPC server at {endpoint} speaks protocol {version.major}.{version.minor}."
            f"{version.patch}; this llama.cpp needs {RPC_PROTO_MAJOR}.x with x <= {RPC_PROTO_MINOR} "
            f"(run the same llama.cpp version on both hosts)"
        )
    reg = lib().ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise RpcError(f"the RPC server at {endpoint} reports no devices")
    g = backend_lib()
    devices = []
    for i in range(g.ggml_backend_reg_dev_count(reg)):
        dev = g.ggml_backend_reg_dev_get(reg, i)
        devices.append(RpcDevice(endpoint, i, g.ggml_backend_dev_name(dev).decode(), dev))
    return tuple(devices)


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """A port that host:port can bind now (any free one for port 0), as llama.cpp binds it (SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise RpcError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
        return s.getsockname()[1]


def _child_command(host: str, port: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "harness.llama.rpc", "--host", host, "--port", str(port), "--threads", str(threads)]


def child_env() -> dict[str, str]:
    env = dict(os.environ, **{_PARENT_ENV: str(os.getpid())})
    # the child must import this very package, also when it is not installed (a checkout, tests): the
    # folder that holds `harness` (harness/ itself would shadow the `gguf` package with harness/gguf)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after grace_s; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def serve(host: str = "127.0.0.1", port: int = 50052, threads: int | None = None) -> int:
    """Run a llama.cpp RPC server lending this host's CPU backend; block until SIGINT or SIGTERM.

    The server itself runs in a child process whose output (llama.cpp's banner, one line per client)
    goes to this process's stdout/stderr. Returns 0 after a signal stopped it; raises RpcError if the
    server exits on its own (port in use, bad host).
    """
    _check_host(host)
    if not 0 < port < 65536:
        raise RpcError(f"RPC port {port} is not in 1..65535")
    threads = _check_threads(threads or default_threads())
    free_port(host, port)
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        proc = subprocess.Popen(_child_command(host, port, threads), env=child_env())
        while not stop:
            try:
                code = proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            raise RpcError(
                f"the RPC server on {host}:{port} exited with status {code} (see its message above; "
                f"is the port in use?)"
            )
        return 0
    finally:
        if proc is not None:
            _stop(proc)
        for s, handler in previous.items():
            signal.signal(s, handler)


class RpcServer:
    """A llama.cpp RPC server in a child process, for tests and local runs.

    `with RpcServer() as server:` starts it on a free loopback port, waits until it answers the RPC
    handshake, and on exit terminates and reaps it. `server.endpoint` is "host:port".
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, threads: int | None = None, start_timeout_s: float = 30.0
    ) -> None:
        _check_host(host)
        self.host = host
        self.port = port
        self.threads = _check_threads(threads or default_threads())
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log: tempfile._TemporaryFileWrapper | None = None
        self._final_log = ""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_text(self) -> str:
        """What the server has printed so far (stdout and stderr)."""
        if self._log is None:
            return self._final_log
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> RpcServer:
        tries = 3 if self.port == 0 else 1
        for attempt in range(tries):
            # a probe of a port that another server holds would succeed: check the port is free first
            port = free_port(self.host, self.port)
            try:
                self._start_on(port)
                self.port = port
                return self
            except BaseException as exc:
                self.stop()  # also on KeyboardInterrupt while waiting: never leave the child behind
                if not isinstance(exc, RpcError):
                    raise
                # another process can take a picked free port before the child binds it
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_on(self, port: int) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="harness-rpc-", suffix=".log")  # noqa: SIM115 - lives with the server
        self.proc = subprocess.Popen(
            _child_command(self.host, port, self.threads),
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout_s
        last = ""
        while True:
            code = self.proc.poll()
            if code is not None:
                log = self.log_text().strip()
                self.stop()
                raise RpcError(
                    f"the RPC server on {self.host}:{port} exited with status {code} before serving: "
                    f"{log[-800:] or 'no output'}"
                )
            try:
                probe(self.host, port, timeout_s=1.0)
                if self.proc.poll() is None:
                    return
                continue
            except RpcError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                self.stop()
                raise RpcError(
                    f"the RPC server on {self.host}:{port} did not answer within {self.start_timeout_s} s ({last})"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        if self._log is not None:
            self._final_log = self.log_text()
            self._log.close()
            self._log = None

    def __enter__(self) -> RpcServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def die_with_parent() -> None:
    """Linux: have the kernel SIGTERM this server when the process that started it dies."""
    expected = os.environ.get(_PARENT_ENV)
    if expected is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(expected):  # the parent died before prctl took effect
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Child entry point: serve in this process until killed."""
    parser = argparse.ArgumentParser(prog="python -m harness.llama.rpc", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args(argv)
    die_with_parent()
    # blocked in C, Python would never run its KeyboardInterrupt handler: let the signal kill us
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        run_in_this_process(args.host, args.port, args.threads)
    except RpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"error: llama.cpp's RPC server on {args.host}:{args.port} stopped (port in use?)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
