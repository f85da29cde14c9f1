"""A loopback HTTP server that behaves like the Hugging Face Hub's file endpoints, for tests.

GET/HEAD /{owner}/{repo}/resolve/{revision}/{path}: X-Repo-Commit, ETag/X-Linked-Etag (the file's
sha256, as for LFS files), X-Linked-Size, Range support, and a relative redirect to a "CDN" path the
way the Hub redirects LFS files. Modes, per repository: "gated" (401 GatedRepo), "forbidden" (403),
"ratelimit" (429 with Retry-After), "norange" (ignores Range: sends the whole file), "drop" (closes
the connection halfway through a body). A hostile server, per repository: `hub.hostile[repo] =
Hostile(...)`, each field one misbehaviour (a commit id that is a path, bodies longer or shorter than
they say, wrong ranges, stalls, trickles, redirects off HTTP, endless listings). It counts the bytes of
every body it sends.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<path>.+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/?]+)(?:\?.*cursor=(?P<cursor>\d+))?")


@dataclass
class Hostile:
    """How one repository misbehaves; every default is the Hub's own behaviour."""

    commit: str | None = COMMIT  # X-Repo-Commit (None: not sent)
    etag: str | None = None  # ETag and X-Linked-Etag instead of the file's sha256 ("": none sent)
    body_etag: str | None = None  # the ETag of responses with a body, when it differs from the metadata's
    declared_size: int | None = None  # X-Linked-Size instead of the file's size
    location: str | None = None  # where /resolve/ redirects instead of the CDN path
    surplus: int = 0  # zeros after each body, whose length then goes unsaid (-1: zeros without end)
    content_length_extra: int = 0  # Content-Length says this many bytes more than are sent
    range_shift: int = 0  # a Range answered from this many bytes further on (Content-Range says so)
    content_range: str | None = None  # this Content-Range on every 206, whatever was sent
    stall_s: float = 0  # silence after the response headers, before the body
    bytes_per_s: float = 0  # trickle bodies at this rate (0: full speed)
    metadata_bytes_per_s: float = 0  # trickle the /resolve/ response's status line and headers
    endless_pages: bool = False  # every listing page links to a next one
    tree_paths: tuple[str, ...] | None = None  # the listing names these paths instead of the files


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], Path] = {}
        self.modes: dict[str, str] = {}
        self.hostile: dict[str, Hostile] = {}
        self.bytes_sent = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._sha: dict[Path, str] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                # a client that hung up mid-response is what hostile tests are about; anything else is
                # kept for the test to see, not printed (CliRunner would read it as the command's stderr)
                exc = sys.exc_info()[1]
                if not isinstance(exc, ConnectionError):
                    hub.server_errors.append(exc)

        self.server_errors: list[BaseException] = []
        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo: str, path_in_repo: str, local: Path) -> None:
        self.files[(repo, path_in_repo)] = Path(local)

    def sha256(self, p: Path) -> str:
        if p not in self._sha:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            self._sha[p] = h.hexdigest()
        return self._sha[p]

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- requests ----------------------------------------------------------------------------------

    def _error(
        self, h: BaseHTTPRequestHandler, status: int, code: str | None = None, extra: dict | None = None
    ) -> None:
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _tree(self, h: BaseHTTPRequestHandler, repo: str, cursor: int) -> None:
        import json

        with self._lock:
            self.requests.append(("GET", h.path, None))
        if not any(r == repo for r, _ in self.files):
            return self._error(h, 404, "RepoNotFound")
        bad = self.hostile.get(repo, Hostile())
        paths = bad.tree_paths or [path for r, path in sorted(self.files) if r == repo]
        body = json.dumps([{"type": "file", "path": path, "size": 1, "oid": "0" * 40} for path in paths]).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        if bad.endless_pages:
            h.send_header("Link", f'<{self.endpoint}/api/models/{repo}/tree/main?cursor={cursor + 1}>; rel="next"')
        h.end_headers()
        h.wfile.write(body)
        with self._lock:
            self.bytes_sent += len(body)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        t = _TREE.match(h.path)
        if t:
            return self._tree(h, t["repo"], int(t["cursor"] or 0))
        m = _RESOLVE.match(h.path) or _CDN.match(h.path)
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", h.path, h.headers.get("Range")))
        if not m:
            return self._error(h, 404, "RepoNotFound")
        repo, path = m["repo"], m["path"]
        mode = self.modes.get(repo, "")
        if mode == "gated":
            return self._error(h, 401, "GatedRepo")
        if mode == "forbidden":
            return self._error(h, 403)
        if mode == "ratelimit":
            return self._error(h, 429, extra={"Retry-After": "7"})
        if not any(r == repo for r, _ in self.files):
            return self._error(h, 401, "RepoNotFound")
        local = self.files.get((repo, path))
        if local is None:
            return self._error(h, 404, "EntryNotFound")
        size = local.stat().st_size
        bad = self.hostile.get(repo, Hostile())
        sha = self.sha256(local) if bad.etag is None else bad.etag
        if h.path.startswith("/" + repo + "/resolve/"):
            # the Hub answers LFS files with a redirect carrying the linked metadata: an absolute URL on
            # another host name, as the Hub's CDN: huggingface_hub reads the metadata from this response
            # and does not follow it for HEAD; range GETs do follow it
            cdn = f"http://localhost:{self.server.server_address[1]}/cdn/{repo}/{path}"
            headers = {"Location": bad.location or cdn}
            if bad.commit is not None:
                headers["X-Repo-Commit"] = bad.commit
            if sha:
                headers["X-Linked-Etag"] = headers["ETag"] = f'"{sha}"'
            headers["X-Linked-Size"] = str(size if bad.declared_size is None else bad.declared_size)
            headers["Content-Length"] = "0"
            if bad.metadata_bytes_per_s:
                raw = "HTTP/1.1 302 Found\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                with contextlib.suppress(OSError):
                    self._send(h, raw.encode(), bad.metadata_bytes_per_s)
                h.close_connection = True
                return
            h.send_response(302)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            return
        start, end = 0, size - 1
        rng = h.headers.get("Range")
        partial = False
        if rng and mode != "norange":
            rm = re.match(r"bytes=(\d+)-(\d*)", rng)
            if rm:
                start = min(int(rm[1]) + bad.range_shift, size - 1)
                end = min((int(rm[2]) if rm[2] else size - 1) + bad.range_shift, size - 1)
                partial = True
        h.send_response(206 if partial else 200)
        if bad.surplus:  # the body's end is the connection's: nothing says how long it is
            h.close_connection = True
        else:
            h.send_header("Content-Length", str(end - start + 1 + bad.content_length_extra))
        h.send_header("Accept-Ranges", "bytes")
        body_etag = sha if bad.body_etag is None else bad.body_etag
        if body_etag:
            h.send_header("ETag", f'"{body_etag}"')
        if partial:
            h.send_header("Content-Range", bad.content_range or f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head:
            return
        remaining = end - start + 1
        limit = remaining // 2 if mode == "drop" else remaining
        try:
            h.wfile.flush()
            time.sleep(bad.stall_s)
            with open(local, "rb") as f:
                f.seek(start)
                sent = 0
                while sent < limit:
                    block = f.read(min(64 * 1024, limit - sent))
                    if not block:
                        break
                    self._send(h, block, bad.bytes_per_s)
                    sent += len(block)
            extra = 0
            while bad.surplus < 0 or extra < bad.surplus:
                block = bytes(64 * 1024 if bad.surplus < 0 else min(64 * 1024, bad.surplus - extra))
                self._send(h, block, bad.bytes_per_s)
                extra += len(block)
        except (BrokenPipeError, ConnectionResetError):
            return
        if bad.content_length_extra or bad.surplus:
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(2)
        if mode == "drop":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(2)

    def _send(self, h: BaseHTTPRequestHandler, block: bytes, bytes_per_s: float) -> None:
        if bytes_per_s:  # a fiftieth of the rate every 20 ms
            step = max(1, int(bytes_per_s / 50))
            for i in range(0, len(block), step):
                time.sleep(step / bytes_per_s)
                h.wfile.write(block[i : i + step])
        else:
            h.wfile.write(block)
        with self._lock:
            self.bytes_sent += len(block)
