"""A loopback HTTP server that behaves like the Hugging Face Hub's file endpoints, for tests.

GET/HEAD /{owner}/{repo}/resolve/{revision}/{path}: X-Repo-Commit, ETag/X-Linked-Etag (the file's
sha256, as for LFS files), X-Linked-Size, Range support, and a relative redirect to a "CDN" path the
way the Hub redirects LFS files. Modes, per repository: "gated" (401 GatedRepo), "forbidden" (403),
"ratelimit" (429 with Retry-After), "norange" (ignores Range: sends the whole file), "drop" (closes
the connection halfway through a body). It counts the bytes of every body it sends.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<path>.+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/?]+)")


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], Path] = {}
        self.modes: dict[str, str] = {}
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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

    def _tree(self, h: BaseHTTPRequestHandler, repo: str) -> None:
        import json

        if not any(r == repo for r, _ in self.files):
            return self._error(h, 404, "RepoNotFound")
        body = json.dumps(
            [
                {"type": "file", "path": path, "size": p.stat().st_size, "oid": "0" * 40}
                for (r, path), p in sorted(self.files.items())
                if r == repo
            ]
        ).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        t = _TREE.match(h.path)
        if t:
            return self._tree(h, t["repo"])
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
        sha = self.sha256(local)
        if h.path.startswith("/" + repo + "/resolve/"):
            # the Hub answers LFS files with a redirect carrying the linked metadata
            h.send_response(302)
            # an absolute URL on another host name, as the Hub's CDN: huggingface_hub reads the metadata
            # from this response and does not follow it for HEAD; range GETs do follow it
            h.send_header("Location", f"http://localhost:{self.server.server_address[1]}/cdn/{repo}/{path}")
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("X-Linked-Etag", f'"{sha}"')
            h.send_header("X-Linked-Size", str(size))
            h.send_header("ETag", f'"{sha}"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start, end = 0, size - 1
        rng = h.headers.get("Range")
        partial = False
        if rng and mode != "norange":
            rm = re.match(r"bytes=(\d+)-(\d*)", rng)
            if rm:
                start = int(rm[1])
                end = min(int(rm[2]) if rm[2] else size - 1, size - 1)
                partial = True
        h.send_response(206 if partial else 200)
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{sha}"')
        if partial:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head:
            return
        remaining = end - start + 1
        limit = remaining // 2 if mode == "drop" else remaining
        try:
            with open(local, "rb") as f:
                f.seek(start)
                sent = 0
                while sent < limit:
                    block = f.read(min(64 * 1024, limit - sent))
                    if not block:
                        break
                    h.wfile.write(block)
                    sent += len(block)
                    with self._lock:
                        self.bytes_sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            return
        if mode == "drop":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(2)
