"""GGUF files on the Hugging Face Hub: header-only reads over HTTP ranges, cached by commit.

`hf://OWNER/REPO/PATH/FILE.gguf[@REVISION]` names a file. Every shard of a split model is pinned to
the one commit the first shard resolved to and read in parallel; only header bytes travel (reads grow
by half of what has been read, so a header costs at most 1.5x its size plus one first block). A
server that ignores Range is read as one stream and abandoned as soon as the header is complete.
huggingface_hub provides endpoints (HF_ENDPOINT), tokens (HF_TOKEN), revisions and metadata; it is
imported lazily.

Nothing a server says is trusted as a path or a length: a commit is a 40-hex id or refused, every read
is bounded by the bytes asked for and checked against its Content-Range, header reads and listings
have an overall deadline, and every path written is checked to lie inside the cache.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from harness import settings
from harness.errors import GGUFError, HubError
from harness.gguf.header import ModelHeader
from harness.gguf.reader import parse_gguf, parse_gguf_keeping_bytes
from harness.gguf.shards import join_shards, parse_shard_name
from harness.gguf.source import BytesSource
from harness.models.assets import atomic_output, probe_writable
from harness.models.registry import is_repo_id
from harness.text import human_bytes

log = logging.getLogger(__name__)

_URI = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)/(?P<file>[^@]+\.gguf)(?:@(?P<rev>[^/]+))?$")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")  # a branch or tag name, or a commit id
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A cached file's name plus the longest suffix added to it (atomic_output's ".NAME.header.XXXXXXXX.part")
# must fit a file system's 255-byte name limit.
_MAX_CACHED_NAME_BYTES = 255 - 22

READ_TIMEOUT_S = 30.0  # the longest a server may stay silent (connect, or between two reads)
HEADER_DEADLINE_S = 300.0  # a whole header read, every shard: 45 MiB (1.5x a 30 MiB header) at 150 KiB/s
LISTING_DEADLINE_S = 120.0  # a whole repository listing, every page
LISTING_MAX_BYTES = 64 << 20  # ~200k files at ~300 bytes of JSON each; the Hub's largest repositories list less
LISTING_MAX_PAGES = 1000  # the Hub pages trees by 1,000 entries


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        return f"hf://{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse_uri(uri: str) -> HubFile:
    m = _URI.match(uri)
    if not m:
        raise HubError(f"{uri!r} is not a Hub file: write hf://OWNER/REPO/FILE.gguf or hf://OWNER/REPO/FILE.gguf@REV")
    check_repo(m["repo"], uri)
    _check_filename(m["file"], uri)
    if m["rev"] is not None and (not _REVISION.fullmatch(m["rev"]) or ".." in m["rev"]):
        raise HubError(f"{uri!r}: {m['rev']!r} is not a revision: write a branch or tag name, or a 40-hex commit id")
    return HubFile(m["repo"], m["file"], m["rev"])


def check_repo(repo: str, where: str) -> None:
    """A repository id the Hub could hold ('owner/name'); anything else (a path, '..') is refused."""
    if not is_repo_id(repo):
        raise HubError(
            f"{where!r}: {repo!r} is not a Hub repository: OWNER/NAME of letters, digits, '_', '-' and '.' "
            "(at most 96 each, no '--' or '..')"
        )


def _check_filename(filename: str, uri: str) -> None:
    parts = filename.split("/")
    if any(p in ("", ".", "..") or "\\" in p or any(ord(c) < 32 or ord(c) == 127 for c in p) for p in parts):
        raise HubError(f"{uri!r}: {filename!r} is not a file's path in a repository (empty, '.' or '..' parts)")
    n = len(cached_name(filename).encode())
    if n > _MAX_CACHED_NAME_BYTES:
        raise HubError(
            f"{uri!r}: the file's path is {n} bytes long; the cache can name at most {_MAX_CACHED_NAME_BYTES}"
        )
    s = parse_shard_name(filename)
    if s is not None and (s.count == 0 or not 1 <= s.no <= s.count):
        raise HubError(f"{uri!r}: the name says shard {s.no} of {s.count}, which cannot exist")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _map_error(exc: Exception, what: str) -> HubError:
    """huggingface_hub's exceptions, most specific first, as one line with the next step."""
    from huggingface_hub import errors as e

    name = type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, e.GatedRepoError):
        return HubError(
            f"{what}: the repository is gated: accept its licence on the Hub, then set HF_TOKEN "
            "to a token of that account"
        )
    if isinstance(exc, e.RepositoryNotFoundError) or status == 401:
        return HubError(
            f"{what}: repository not found or not accessible: check the name, or set HF_TOKEN if it is private"
        )
    if isinstance(exc, e.RevisionNotFoundError):
        return HubError(f"{what}: no such revision")
    if isinstance(exc, e.EntryNotFoundError) or status == 404:
        return HubError(f"{what}: no such file in the repository")
    if status == 403:
        return HubError(
            f"{what}: access denied (403): your token lacks access; accept the licence or use a token with read access"
        )
    if status == 429:
        retry = getattr(exc.response, "headers", {}).get("Retry-After", "a while")
        return HubError(f"{what}: rate limited by the Hub (429): retry after {_one_line(retry, 40)} seconds")
    if isinstance(exc, e.OfflineModeIsEnabled):
        return HubError(f"{what}: HF_HUB_OFFLINE is set and the header is not cached")
    if status is not None and status >= 500:
        return HubError(f"{what}: the Hub answered {status} (a server error): retry later")
    if status is None and _is_transport_error(exc):
        from huggingface_hub import constants  # the metadata request's own timeout (HF_HUB_ETAG_TIMEOUT)

        return _transport_error(exc, what, "asking the Hub about the file", constants.HF_HUB_ETAG_TIMEOUT)
    return HubError(f"{what}: {name}: {_one_line(exc)}")


def _is_transport_error(exc: Exception) -> bool:
    # by name: the HTTP backend is huggingface_hub's choice (httpx2 here), not ours
    return any(c.__name__ in ("TransportError", "TooManyRedirects", "TimeoutException") for c in type(exc).__mro__)


def _transport_error(exc: Exception, name: str, what: str, timeout_s: float | None = None) -> HubError:
    """A transport failure (no HTTP status to speak of) as one line saying what happened."""
    kinds = {c.__name__ for c in type(exc).__mro__}
    try:
        url = str(exc.request.url)
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
        url = None
    if "UnsupportedProtocol" in kinds:
        where = f"to {_one_line(url, 120)}" if url else "to a URL"
        return HubError(f"{name}: {what}: the server redirected {where}, which is not HTTP(S); refusing to follow it")
    if "TooManyRedirects" in kinds:
        return HubError(f"{name}: {what}: too many redirects")
    if "ConnectTimeout" in kinds or "ConnectError" in kinds:
        host = f" {url.split('/')[2]}" if url and url.count("/") >= 2 else ""
        return HubError(f"{name}: {what}: cannot connect to{host}: {_one_line(exc, 120) or 'connection refused'}")
    if "TimeoutException" in kinds:
        return HubError(f"{name}: {what}: the server sent nothing for {timeout_s or READ_TIMEOUT_S:g} s")
    if "OfflineModeIsEnabled" in kinds:
        return HubError(f"{name}: HF_HUB_OFFLINE is set and the header is not cached")
    return HubError(f"{name}: {what}: the connection failed ({type(exc).__name__}: {_one_line(exc, 160)})")


class _Deadline:
    """An overall time limit for a job made of many reads (a server sending 1 byte/s never trips a read timeout)."""

    def __init__(self, seconds: float, job: str) -> None:
        self.seconds, self.job = seconds, job
        self.at = time.monotonic() + seconds

    def left_s(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self, name: str) -> None:
        if time.monotonic() > self.at:
            raise self.passed(name)

    def passed(self, name: str) -> HubError:
        return HubError(
            f"{name}: {self.job} took longer than {self.seconds:g} s: the server is too slow or stalled; "
            "try again later"
        )


def _parallel(fn: Callable, items: list, workers: int = 8) -> list:
    """``fn`` over ``items`` on up to ``workers`` threads, in order. Work is handed out as threads come
    free, so the first failure stops the rest (a name claiming 99,999 shards costs a few requests, not
    99,999); the failure of the earliest item is raised."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    results: list = [None] * len(items)
    errors: dict[int, BaseException] = {}
    todo = iter(enumerate(items))
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        running = {}

        def hand_out() -> None:
            nxt = next(todo, None)
            if nxt is not None and not errors:
                running[pool.submit(fn, nxt[1])] = nxt[0]

        for _ in range(workers):
            hand_out()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                i = running.pop(f)
                if f.exception() is not None:
                    errors[i] = f.exception()
                else:
                    results[i] = f.result()
                hand_out()
    if errors:
        raise errors[min(errors)]
    return results


@dataclass(frozen=True)
class RemoteFile:
    hub: HubFile
    commit: str  # 40 hex digits: the only server-given value that names a folder
    size_bytes: int
    etag: str | None
    url: str  # pinned to the commit


def remote_file(f: HubFile, commit: str | None = None, deadline: _Deadline | None = None) -> RemoteFile:
    from huggingface_hub import hf_hub_url

    rev = commit or f.revision
    url = hf_hub_url(f.repo, f.filename, revision=rev)
    meta = _metadata(url, f.uri, deadline or _Deadline(HEADER_DEADLINE_S, "asking the Hub about the file"))
    if meta.size is None:
        raise HubError(f"{f.uri}: the Hub did not say how large the file is")
    if meta.size < 0:
        raise HubError(f"{f.uri}: the server declared a negative size ({meta.size} bytes); refusing the file")
    pinned = meta.commit_hash
    if pinned is None:
        if rev is None or not _COMMIT.fullmatch(rev):
            raise HubError(
                f"{f.uri}: the server did not say which commit it serves (no X-Repo-Commit); "
                "name one with @COMMIT (40 hex digits)"
            )
        pinned = rev
    if not _COMMIT.fullmatch(pinned):
        raise HubError(f"{f.uri}: the server's commit id {_one_line(pinned, 60)!r} is not 40 hex digits; refusing it")
    if rev is not None and _COMMIT.fullmatch(rev) and pinned != rev:
        raise HubError(f"{f.uri}: asked for commit {rev}, the server answered {pinned}")
    return RemoteFile(f, pinned, int(meta.size), meta.etag, hf_hub_url(f.repo, f.filename, revision=pinned))


def _metadata(url: str, name: str, deadline: _Deadline):
    """huggingface_hub's file metadata (a HEAD request), within ``deadline``: a server that sends its
    response headers a byte at a time never trips a read timeout, so the request runs in a daemon thread
    that is left behind (to die with the process) when the deadline passes."""
    from huggingface_hub import get_hf_file_metadata

    box: dict = {}

    def ask() -> None:
        try:
            box["meta"] = get_hf_file_metadata(url)
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=ask, name=f"metadata {name}", daemon=True)
    t.start()
    t.join(deadline.left_s())
    if t.is_alive():
        raise deadline.passed(name)
    if "error" in box:
        raise _map_error(box["error"], name) from None
    return box["meta"]


def _hf_headers(extra: dict[str, str]) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    headers.update(extra)
    return headers


def _open(url: str, headers: dict[str, str], name: str, what: str):
    """A streamed GET: (its context manager, the response); every failure to get one as a HubError."""
    from huggingface_hub import get_session

    try:
        cm = get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=READ_TIMEOUT_S)
        return cm, cm.__enter__()
    except Exception as exc:
        raise (_map_error(exc, name) if hasattr(exc, "response") else _transport_error(exc, name, what)) from None


def _chunks(resp, name: str, what: str, deadline: _Deadline | None, fail=None) -> Iterator[bytes]:
    """A body's chunks as they arrive (as small as the network delivers them, so the deadline is checked
    between bytes of a slow server); a transport failure as a HubError (``fail(reason)``'s, if given)."""
    it = resp.iter_bytes()
    while True:
        if deadline is not None:
            deadline.check(name)
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise (fail(_reason(exc)) if fail else _transport_error(exc, name, what)) from None
        yield chunk


def _reason(exc: Exception) -> str:
    """Why a connection broke mid-body, in a few words."""
    if any(c.__name__ == "TimeoutException" for c in type(exc).__mro__):
        return f"the server sent nothing for {READ_TIMEOUT_S:g} s"
    return _one_line(f"{type(exc).__name__}: {exc}", 160)


def _check_content_range(resp, name: str, first: int, last: int, size: int) -> None:
    """A 206's Content-Range must be exactly the bytes asked for (``first``-``last`` of ``size``)."""
    said = resp.headers.get("Content-Range")
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", (said or "").strip())
    if m is None or (int(m[1]), int(m[2]), int(m[3])) != (first, last, size):
        raise HubError(
            f"{name}: asked for bytes {first}-{last} of {size}, the server answered "
            + (f"Content-Range {_one_line(said, 80)!r}" if said else "with no Content-Range")
        )


def _declared_length(resp) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


class HttpSource:
    """A ByteSource over HTTP range requests (a ByteSource for harness.reader)."""

    read_ahead_fraction = 0.5  # grow by half of what has been read: at most 1.5x the header

    def __init__(self, remote: RemoteFile, deadline: _Deadline | None = None) -> None:
        self.remote = remote
        self.name = remote.hub.uri
        self.bytes_fetched = 0
        self._deadline = deadline or _Deadline(HEADER_DEADLINE_S, "reading the header")
        self._stream = None  # set when the server ignored Range: the rest is read sequentially
        self._stream_pos = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self.remote.size_bytes

    def read(self, offset: int, n: int) -> bytes:
        n = min(n, self.size_bytes - offset)
        if n <= 0:
            return b""
        with self._lock:
            if self._stream is not None:
                return self._read_stream(offset, n)
            self._deadline.check(self.name)
            rng = f"bytes={offset}-{offset + n - 1}"
            what = f"reading {rng}"
            cm, resp = _open(self.remote.url, _hf_headers({"Range": rng}), self.name, what)
            if resp.status_code == 206:
                try:
                    return self._read_range(resp, offset, n, what)
                finally:
                    cm.__exit__(None, None, None)
            if resp.status_code == 200:
                declared = _declared_length(resp)
                if declared is not None and declared != self.size_bytes:
                    cm.__exit__(None, None, None)
                    raise HubError(
                        f"{self.name}: the server sends {declared} bytes for a file the Hub said is "
                        f"{self.size_bytes} bytes long"
                    )
                # Range ignored: keep this one stream, read it only as far as the parser asks
                self._stream = (cm, _chunks(resp, self.name, what, self._deadline))
                self._buffer = b""
                self._stream_pos = 0
                return self._read_stream(offset, n)
            cm.__exit__(None, None, None)
            raise HubError(f"{self.name}: the server answered {resp.status_code} to a range request")

    def _read_range(self, resp, offset: int, n: int, what: str) -> bytes:
        """A 206 body: exactly the ``n`` bytes asked for, or a HubError saying how the server went wrong."""
        end = offset + n - 1
        _check_content_range(resp, self.name, offset, end, self.size_bytes)
        declared = _declared_length(resp)
        if declared is not None and declared != n:
            raise HubError(f"{self.name}: asked for {n} bytes ({offset}-{end}), the server announced {declared}")
        parts, got = [], 0
        for chunk in _chunks(resp, self.name, what, self._deadline):
            got += len(chunk)
            self.bytes_fetched += len(chunk)
            if got > n:
                raise HubError(f"{self.name}: the server sent more than the {n} bytes asked for ({offset}-{end})")
            parts.append(chunk)
        if got < n:
            raise HubError(f"{self.name}: {what}: the response ended after {got} of {n} bytes")
        return b"".join(parts)

    def _read_stream(self, offset: int, n: int) -> bytes:
        if offset != self._stream_pos - len(self._buffer):
            raise HubError(f"{self.name}: the server ignores Range and the reader asked for bytes out of order")
        _, chunks = self._stream
        while len(self._buffer) < n:
            chunk = next(chunks, None)
            if chunk is None:
                raise HubError(
                    f"{self.name}: the response ended at byte {self._stream_pos} of {self.size_bytes}, "
                    f"short of byte {offset + n}"
                )
            self._buffer += chunk
            self._stream_pos += len(chunk)
            self.bytes_fetched += len(chunk)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream[0].__exit__(None, None, None)
            self._stream = None


# -- the cache ---------------------------------------------------------------------------------------
# headers/OWNER--NAME/COMMIT/PATH--IN--REPO.gguf.header (and .json): header prefixes read over HTTP
# hub/OWNER--NAME/COMMIT/PATH--IN--REPO.gguf: verified downloads
# {headers,hub}/OWNER--NAME/refs/REVISION: the commit REVISION last resolved to (as huggingface_hub's refs/)

HEADERS, DOWNLOADS = "headers", "hub"
_HEADER_SUFFIX = ".header"
_REFS = "refs"


def repo_folder(kind: str, repo: str) -> Path:
    """The cache folder of one Hub repository's headers (HEADERS) or files (DOWNLOADS), a folder per
    commit below; named as huggingface_hub's repo_folder_name, less its type: 'owner/name' -> 'owner--name'."""
    return settings.cache_dir() / kind / repo.replace("/", "--")


def cached_name(filename: str) -> str:
    """A file's path inside its repository as one file name in the cache: 'sub/x.gguf' -> 'sub--x.gguf'."""
    return filename.replace("/", "--")


def matches_pattern(name: str, pattern: str) -> bool:
    """Whether a cached file ``name`` is one a registry entry's ``pattern`` names: the pattern matches a
    file's own name, the last part of its cached_name."""
    return fnmatch.fnmatch(name.rsplit("--", 1)[-1], pattern)


def _in_cache(path: Path) -> Path:
    """``path``, once checked to lie inside the cache directory. Checked on the names, not through
    symbolic links: a folder the user linked to another disk is theirs to make, and a server cannot."""
    root = os.path.abspath(settings.cache_dir())
    p = os.path.abspath(path)
    if os.path.commonpath([root, p]) != root:
        raise HubError(f"refusing to write {p}: it is outside the cache {root}")
    return path


def _discard(*paths: Path) -> None:
    """Remove broken cache entries, whatever they have become (a file, a folder, a dangling link)."""
    for path in paths:
        _in_cache(path)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise HubError(f"cannot remove the broken cache entry {path}: {exc.strerror}; remove it by hand") from None


def _writable(folder: Path, name: str) -> None:
    """Create ``folder`` and prove a file can be written there, before any byte is fetched."""
    _in_cache(folder)
    try:
        probe_writable(folder)
    except OSError as exc:
        raise HubError(
            f"{name}: cannot write to the cache at {folder}: {exc.strerror or exc}; "
            "make it writable or set HARNESS_CACHE_DIR to a folder that is"
        ) from None


def _header_path(hub: HubFile, commit: str) -> Path:
    return _in_cache(repo_folder(HEADERS, hub.repo) / commit / (cached_name(hub.filename) + _HEADER_SUFFIX))


def _cache_path(remote: RemoteFile) -> Path:
    return _header_path(remote.hub, remote.commit)


def _cached(hub: HubFile, commit: str, remote: RemoteFile | None = None) -> BytesSource | None:
    """The cached header of this file at this commit, if there is a sound one (checked against ``remote``
    when online). An entry that cannot be read or contradicts itself is discarded, to be fetched again."""
    p = _header_path(hub, commit)
    meta = p.with_suffix(".json")
    if not (p.exists() or p.is_symlink() or meta.exists() or meta.is_symlink()):
        return None
    try:
        info = json.loads(meta.read_text())
        data = p.read_bytes()
        size = info["size_bytes"]
        sound = type(size) is int and len(data) <= size
        if remote is not None:
            sound = sound and size == remote.size_bytes and info.get("etag") == remote.etag
    except (OSError, ValueError, KeyError, TypeError):
        sound = False
    if not sound:
        _discard_header(p, "unreadable or out of date")
        return None
    return BytesSource(data, name=hub.uri, size_bytes=size)


def _discard_header(p: Path, why: str) -> None:
    log.warning("discarding the cached header %s (%s)", p, why)
    try:
        _discard(p, p.with_suffix(".json"))
    except HubError as exc:  # a read-only cache: the header is fetched again all the same
        log.warning("%s", exc)


def _store(remote: RemoteFile, prefix: bytes) -> None:
    """Cache a header; a cache that cannot be written costs the next run a fetch, not this run its answer."""
    path = _cache_path(remote)
    try:
        with atomic_output(path) as out:
            out.write(prefix)
        with atomic_output(path.with_suffix(".json")) as out:
            out.write(
                json.dumps(
                    {"size_bytes": remote.size_bytes, "etag": remote.etag, "commit": remote.commit, "url": remote.url}
                ).encode()
            )
    except OSError as exc:
        log.warning("cannot cache the header of %s in %s: %s", remote.hub.uri, path.parent, exc.strerror or exc)


def _write_ref(kind: str, f: HubFile, commit: str) -> None:
    """Remember the commit ``f``'s revision resolved to, for reads that cannot ask (offline)."""
    rev = f.revision or "main"
    if _COMMIT.fullmatch(rev):
        return
    path = _in_cache(repo_folder(kind, f.repo) / _REFS / rev)
    try:
        with atomic_output(path) as out:
            out.write(commit.encode())
    except OSError as exc:
        log.warning("cannot record %s's commit in %s: %s", f.uri, path, exc.strerror or exc)


def _pinned_commit(kind: str, files: list[HubFile], present: Callable[[Path], bool]) -> str | None:
    """The one commit every shard is read at without asking the Hub: the revision itself when it is a
    commit id, else the commit its ref recorded, else the newest commit folder holding every shard."""
    base = repo_folder(kind, files[0].repo)
    names = [cached_name(f.filename) for f in files]

    def complete(commit: str) -> bool:
        return all(present(base / commit / n) for n in names)

    rev = files[0].revision or "main"
    if _COMMIT.fullmatch(rev):
        return rev if complete(rev) else None
    try:
        ref = (base / _REFS / rev).read_text().strip()
    except (OSError, UnicodeDecodeError):
        ref = ""
    if _COMMIT.fullmatch(ref) and complete(ref):
        return ref
    folders = [p for p in base.glob("*") if _COMMIT.fullmatch(p.name) and p.is_dir() and complete(p.name)]
    return max(folders, key=lambda p: p.stat().st_mtime).name if folders else None


@dataclass(frozen=True)
class RemoteHeader:
    header: ModelHeader
    bytes_fetched: int  # over the network in this call (0 from the cache)
    header_bytes: int  # total header bytes of all shards
    commit: str | None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def shard_files(f: HubFile) -> list[HubFile]:
    s = parse_shard_name(f.filename)
    return [f] if s is None else [HubFile(f.repo, name, f.revision) for name in s.shards()]


def read_remote_header(uri: str) -> RemoteHeader:
    """The header of a Hub model (every shard of a split one), fetching only header bytes."""
    files = shard_files(parse_uri(uri))
    if _offline():
        return _read_offline(files)
    deadline = _Deadline(HEADER_DEADLINE_S, "reading the header")
    first = remote_file(files[0], deadline=deadline)
    remotes = [first] + _parallel(lambda f: remote_file(f, first.commit, deadline), files[1:])

    def one(remote: RemoteFile) -> tuple[object, int]:
        cached = _cached(remote.hub, remote.commit, remote)
        if cached is not None:
            try:
                return parse_gguf(cached), 0
            except GGUFError as exc:  # what was fetched parsed once: the cache was damaged since
                _discard_header(_cache_path(remote), _one_line(exc, 120))
        src = HttpSource(remote, deadline)
        try:
            parsed, prefix = parse_gguf_keeping_bytes(src)
        finally:
            src.close()
        _store(remote, prefix)
        return parsed, src.bytes_fetched

    results = _parallel(one, remotes)
    _write_ref(HEADERS, files[0], first.commit)
    parsed_files = [r[0] for r in results]
    fetched = sum(r[1] for r in results)
    header_bytes = sum(p.header_bytes for p in parsed_files)
    return RemoteHeader(join_shards(parsed_files, len(files) > 1), fetched, header_bytes, first.commit)


def _read_offline(files: list[HubFile]) -> RemoteHeader:
    commit = _pinned_commit(HEADERS, files, lambda p: p.with_name(p.name + _HEADER_SUFFIX).exists())
    sources = [_cached(f, commit) for f in files] if commit else [None] * len(files)
    parsed = []
    for f, s in zip(files, sources):
        if s is None:
            break
        try:
            parsed.append(parse_gguf(s))
        except GGUFError as exc:
            _discard_header(_header_path(f, commit), _one_line(exc, 120))
            break
    if len(parsed) < len(files):
        missing = [f.uri for f in files[len(parsed) :]]
        raise HubError(f"HF_HUB_OFFLINE is set and these headers are not cached: {', '.join(missing)}")
    return RemoteHeader(join_shards(parsed, len(files) > 1), 0, sum(p.header_bytes for p in parsed), None)


# -- downloads -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size_bytes: int
    sha256: str  # of the bytes written ("" for a file already there that the Hub gave no sha256 for)
    resumed_from: int  # bytes already on disk from an interrupted run
    verified: bool  # the sha256 matched the Hub's (False: the Hub's etag is no sha256, nothing to check)


def local_dir(remote: RemoteFile) -> Path:
    return _in_cache(repo_folder(DOWNLOADS, remote.hub.repo) / remote.commit)


def _download_paths(remote: RemoteFile) -> tuple[Path, Path, Path, Path]:
    """(the verified file, its partial download, the partial's state, its lock), side by side."""
    target = local_dir(remote) / cached_name(remote.hub.filename)
    part, state, lock = (target.with_name(target.name + s) for s in (".part", ".part.json", ".lock"))
    return target, part, state, lock


def download(uri: str, progress=None) -> list[Downloaded]:
    """Fetch every shard of ``uri`` into the cache, resuming partial files (also left by another process),
    verifying each against the Hub's size and LFS sha256; only verified files get their final name."""
    files = shard_files(parse_uri(uri))
    first = remote_file(files[0])
    remotes = [first] + [remote_file(f, first.commit) for f in files[1:]]
    _writable(local_dir(first), first.hub.uri)
    _check_room(remotes)
    done = [_download_one(r, progress) for r in remotes]
    _write_ref(DOWNLOADS, files[0], first.commit)
    return done


def _check_room(remotes: list[RemoteFile]) -> None:
    """Refuse a download the cache's disk cannot hold, before a byte of it is fetched (what an earlier run
    left of it counts as fetched)."""
    folder = local_dir(remotes[0])
    need = 0
    for r in remotes:
        target, part, _, _ = _download_paths(r)
        done = target.stat().st_size if target.is_file() else part.stat().st_size if part.is_file() else 0
        need += max(0, r.size_bytes - done)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise HubError(
            f"{remotes[0].hub.uri}: needs {human_bytes(need)} more on the disk of {folder}, which has "
            f"{human_bytes(free)} free: make room, or set HARNESS_CACHE_DIR to a folder on a larger disk"
        )


def _download_one(remote: RemoteFile, progress) -> Downloaded:
    from filelock import FileLock

    name = remote.hub.uri
    target, part, state, lock = _download_paths(remote)
    expect_sha = remote.etag if remote.etag and _SHA256.fullmatch(remote.etag) else None
    if lock.is_dir():
        _discard(lock)
    with FileLock(str(lock)):
        if target.is_file() and not target.is_symlink() and target.stat().st_size == remote.size_bytes:
            return Downloaded(target, remote.size_bytes, expect_sha or "", 0, expect_sha is not None)
        for p in (target, part, state):  # a wrong-sized file, or a folder where a file belongs
            if (p.exists() or p.is_symlink()) and (p is target or not p.is_file() or p.is_symlink()):
                _discard(p)
        have = _resumable(remote, part, state, expect_sha)
        digest = hashlib.sha256()
        try:
            if not have:
                state.write_text(json.dumps(_state(remote)))
            with open(part, "ab+") as f:  # hash what an earlier run left
                f.seek(0)
                while block := f.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise HubError(f"{name}: cannot write {part}: {exc.strerror or exc}") from None
        resumed = have
        if have < remote.size_bytes:
            have, digest = _fetch_into(remote, part, state, have, digest, progress, expect_sha is None)
        if have != remote.size_bytes:
            raise HubError(
                f"{name}: the connection ended at byte {have} of {remote.size_bytes}; "
                "run the same command again to resume"
            )
        sha = digest.hexdigest()
        if expect_sha and sha != expect_sha:
            _discard(part, state)
            raise HubError(
                f"{name}: corrupted download: sha256 {sha} is not the Hub's {expect_sha}; "
                "the partial file was deleted, run again to download it afresh"
            )
        try:
            os.replace(part, target)
        except OSError as exc:
            raise HubError(f"{name}: cannot move the download to {target}: {exc.strerror or exc}") from None
        state.unlink(missing_ok=True)
        return Downloaded(target, have, sha, resumed, expect_sha is not None)


def _state(remote: RemoteFile) -> dict:
    return {"url": remote.url, "commit": remote.commit, "etag": remote.etag, "size_bytes": remote.size_bytes}


def _resumable(remote: RemoteFile, part: Path, state: Path, expect_sha: str | None) -> int:
    """The bytes of ``part`` an earlier run left that this one may continue from (0: start afresh, the
    partial file discarded): only those of this very file, and without a sha256 to verify the whole
    at the end, only where an etag can make the server refuse a resume across a change."""
    if not part.is_file():
        return 0
    why = None
    try:
        recorded = json.loads(state.read_text())
    except (OSError, ValueError):
        recorded, why = None, "its state file is unreadable"
    if why is None and recorded != _state(remote):
        why = "the file changed on the Hub since"
    size = part.stat().st_size
    if why is None and size > remote.size_bytes:
        why = f"it is longer ({size} bytes) than the file ({remote.size_bytes})"
    if why is None and expect_sha is None and not remote.etag:
        why = "the Hub gives neither a sha256 nor an etag to tell whether the file is still the same"
    if why is None:
        return size
    log.warning("%s: starting afresh, not from the partial download: %s", remote.hub.uri, why)
    _discard(part, state)
    return 0


def _fetch_into(remote: RemoteFile, part: Path, state: Path, have: int, digest, progress, unverified: bool):
    """Append the rest of the file to ``part``; returns (bytes now on disk, the running sha256). Never
    writes past the declared size; more bytes than that is a corrupt response and discards the partial file."""
    name, size = remote.hub.uri, remote.size_bytes
    extra = {}
    if have:
        extra["Range"] = f"bytes={have}-"
        if unverified:  # a server whose file changed answers 200 with the whole new file
            extra["If-Range"] = f'"{remote.etag}"'
    what = f"downloading from byte {have}"
    cm, resp = _open(remote.url, _hf_headers(extra), name, what)
    try:
        if resp.status_code not in (200, 206):
            raise HubError(f"{name}: the server answered {resp.status_code}")
        if resp.status_code == 206:
            _check_content_range(resp, name, have, size - 1, size)
            etag = resp.headers.get("ETag", "").removeprefix("W/").strip('"') or None
            if unverified and etag is not None and etag != remote.etag:
                _discard(part, state)
                raise HubError(
                    f"{name}: the file changed on the server (etag {remote.etag!r}, now {_one_line(etag, 80)!r}) "
                    "and it has no sha256 to verify a resume: the partial file was deleted, run again to "
                    "download it afresh"
                )
        elif have:  # Range ignored: start over rather than append
            have = 0
            digest = hashlib.sha256()
        declared = _declared_length(resp)
        if declared is not None and declared != size - have:
            raise HubError(f"{name}: the server announced {declared} bytes where {size - have} remain of {size}")
        try:
            f = open(part, "ab" if have else "wb")  # noqa: SIM115 - closed in the finally below
        except OSError as exc:
            raise HubError(f"{name}: cannot write {part}: {exc.strerror or exc}") from None

        def broken(reason: str) -> HubError:
            return HubError(
                f"{name}: the connection ended at byte {have} of {size} ({reason}); "
                "run the same command again to resume"
            )

        try:
            for chunk in _chunks(resp, name, what, None, broken):
                if len(chunk) > size - have:
                    _discard(part, state)
                    raise HubError(
                        f"{name}: the server sent more than the {size} bytes the Hub declared: the download "
                        "was discarded as corrupt; run again to download it afresh"
                    )
                f.write(chunk)
                digest.update(chunk)
                have += len(chunk)
                if progress:
                    progress(have, size)
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise HubError(
                f"{name}: cannot write {part} at byte {have}: {exc.strerror or exc}; "
                "make room, then run the same command again to resume"
            ) from None
        finally:
            with contextlib.suppress(OSError):  # a write that failed has been reported above
                f.close()
    finally:
        cm.__exit__(None, None, None)
    return have, digest


def find_in_repo(repo: str, pattern: str, revision: str | None = None) -> str:
    """The one GGUF model in ``repo`` whose file name matches ``pattern`` (a glob); for a split model,
    its first shard. An error lists the candidates when there are several models or none."""
    check_repo(repo, f"hf://{repo}")
    files = list_files(repo, revision)
    matches = sorted(f for f in files if f.endswith(".gguf") and fnmatch.fnmatch(Path(f).name, pattern))
    models = sorted({_first_shard(f) for f in matches})
    if len(models) != 1:
        raise HubError(
            f"hf://{repo}: {len(models)} GGUF models match {pattern!r}"
            + (f": {', '.join(models[:8])}" if models else "")
            + "; make the registry's pattern match one"
        )
    return models[0]


def list_files(repo: str, revision: str | None = None) -> list[str]:
    """Every file's path in ``repo`` (the Hub's tree API, page by page), within LISTING_DEADLINE_S,
    LISTING_MAX_BYTES and LISTING_MAX_PAGES: a server that pages forever is stopped, not followed."""
    from huggingface_hub import constants
    from huggingface_hub.utils import hf_raise_for_status

    what = f"hf://{repo}"
    if _offline():
        raise HubError(f"{what}: HF_HUB_OFFLINE is set: the repository cannot be listed")
    deadline = _Deadline(LISTING_DEADLINE_S, "listing the repository")
    url = f"{constants.ENDPOINT}/api/models/{repo}/tree/{quote(revision or 'main', safe='')}?recursive=true"
    files: list[str] = []
    total = 0
    for _ in range(LISTING_MAX_PAGES):
        cm, resp = _open(url, _hf_headers({}), what, "listing the repository")
        try:
            body = bytearray()
            for chunk in _chunks(resp, what, "listing the repository", deadline):
                body += chunk
                if total + len(body) > LISTING_MAX_BYTES:
                    raise HubError(
                        f"{what}: the listing exceeds {LISTING_MAX_BYTES:,} bytes: the server is misbehaving"
                    )
        finally:
            cm.__exit__(None, None, None)
        total += len(body)
        if resp.status_code >= 400:
            try:
                hf_raise_for_status(
                    type(resp)(resp.status_code, headers=resp.headers, content=bytes(body), request=resp.request)
                )
            except Exception as exc:
                raise _map_error(exc, what) from None
            raise HubError(f"{what}: the Hub answered {resp.status_code} to the listing")
        try:
            page = json.loads(body)
        except ValueError:
            page = None
        if not isinstance(page, list) or not all(isinstance(e, dict) for e in page):
            raise HubError(f"{what}: the listing is not the Hub's JSON list of files")
        files += [e["path"] for e in page if e.get("type") == "file" and isinstance(e.get("path"), str)]
        url = resp.links.get("next", {}).get("url")
        if not url:
            return files
    raise HubError(f"{what}: the listing goes on past {LISTING_MAX_PAGES} pages: the server is misbehaving")


def _first_shard(filename: str) -> str:
    s = parse_shard_name(filename)
    return filename if s is None or s.count == 0 else s.shard(1)


def registry_uri(entry) -> str:
    """hf:// URI of a registry entry's file on the Hub (listing the repository once)."""
    if entry.hf is None:
        raise HubError(f"{entry.name} has no Hub source in the registry")
    return f"hf://{entry.hf.repo}/{find_in_repo(entry.hf.repo, entry.hf.pattern)}"


def header_cached(entry) -> bool:
    """Whether some header of this entry's repository matching its pattern is in the cache."""
    if entry.hf is None:
        return False
    base = repo_folder(HEADERS, entry.hf.repo)
    return any(
        matches_pattern(p.name.removesuffix(_HEADER_SUFFIX), entry.hf.pattern)
        for p in base.glob(f"*/*{_HEADER_SUFFIX}")
    )


def downloaded_entry(entry) -> list[Path] | None:
    """The verified local files of a registry entry downloaded from its Hub source (every shard, at the
    newest commit that has them all), found without the network; None when there are none."""
    if entry.hf is None:
        return None
    base = repo_folder(DOWNLOADS, entry.hf.repo)
    found = []
    for p in base.glob("*/*.gguf"):
        filename = p.name.replace("--", "/")
        if matches_pattern(p.name, entry.hf.pattern) and _first_shard(filename) == filename:
            found.append((p.stat().st_mtime, p.parent.name, filename))
    for _, commit, filename in sorted(found, reverse=True):
        paths = downloaded_paths(f"hf://{entry.hf.repo}/{filename}", commit)
        if paths:
            return paths
    return None


def downloaded_paths(uri: str, commit: str | None) -> list[Path] | None:
    """The verified local files of a Hub model (every shard), at ``commit`` or, when None, at the commit
    its revision last resolved to (else the newest downloaded); None unless all shards are there."""
    files = shard_files(parse_uri(uri))
    base = repo_folder(DOWNLOADS, files[0].repo)
    if commit is None:
        commit = _pinned_commit(DOWNLOADS, files, Path.is_file)
        if commit is None:
            return None
    paths = [base / commit / cached_name(f.filename) for f in files]
    return paths if all(p.is_file() for p in paths) else None
