"""GGUF files on the Hugging Face Hub: header-only reads over HTTP ranges, cached by commit.

`hf://OWNER/REPO/PATH/FILE.gguf[@REVISION]` names a file. Every shard of a split model is pinned to
the one commit the first shard resolved to and read in parallel; only header bytes travel (reads grow
by half of what has been read, so a header costs at most 1.5x its size plus one first block). A
server that ignores Range is read as one stream and abandoned as soon as the header is complete.
huggingface_hub provides endpoints (HF_ENDPOINT), tokens (HF_TOKEN), revisions and metadata; it is
imported lazily.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness import settings
from harness.errors import HubError
from harness.gguf.header import ModelHeader
from harness.gguf.reader import parse_gguf, parse_gguf_keeping_bytes
from harness.gguf.shards import join_shards, parse_shard_name
from harness.gguf.source import BytesSource
from harness.models.assets import atomic_output

_URI = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)/(?P<file>[^@]+\.gguf)(?:@(?P<rev>[^/]+))?$")


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
    return HubFile(m["repo"], m["file"], m["rev"])


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
        return HubError(f"{what}: rate limited by the Hub (429): retry after {retry} seconds")
    if isinstance(exc, e.OfflineModeIsEnabled):
        return HubError(f"{what}: HF_HUB_OFFLINE is set and the header is not cached")
    return HubError(f"{what}: {name}: {exc}")


@dataclass(frozen=True)
class RemoteFile:
    hub: HubFile
    commit: str
    size_bytes: int
    etag: str | None
    url: str  # pinned to the commit


def remote_file(f: HubFile, commit: str | None = None) -> RemoteFile:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    rev = commit or f.revision
    url = hf_hub_url(f.repo, f.filename, revision=rev)
    try:
        meta = get_hf_file_metadata(url)
    except Exception as exc:
        raise _map_error(exc, f.uri) from None
    if meta.size is None:
        raise HubError(f"{f.uri}: the Hub did not say how large the file is")
    pinned = meta.commit_hash or rev or "main"
    return RemoteFile(f, pinned, int(meta.size), meta.etag, hf_hub_url(f.repo, f.filename, revision=pinned))


class HttpSource:
    """A ByteSource over HTTP range requests (a ByteSource for harness.reader)."""

    read_ahead_fraction = 0.5  # grow by half of what has been read: at most 1.5x the header

    def __init__(self, remote: RemoteFile) -> None:
        self.remote = remote
        self.name = remote.hub.uri
        self.bytes_fetched = 0
        self._stream = None  # set when the server ignored Range: the rest is read sequentially
        self._stream_pos = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self.remote.size_bytes

    def read(self, offset: int, n: int) -> bytes:
        from huggingface_hub import get_session
        from huggingface_hub.utils import build_hf_headers

        n = min(n, self.size_bytes - offset)
        if n <= 0:
            return b""
        with self._lock:
            if self._stream is not None:
                return self._read_stream(offset, n)
            headers = build_hf_headers()
            headers["Range"] = f"bytes={offset}-{offset + n - 1}"
            headers["Accept-Encoding"] = "identity"
            try:
                cm = get_session().stream("GET", self.remote.url, headers=headers, follow_redirects=True, timeout=30)
                resp = cm.__enter__()
            except Exception as exc:
                raise HubError(f"{self.name}: cannot read bytes {offset}-{offset + n - 1}: {exc}") from None
            if resp.status_code == 206:
                try:
                    data = resp.read()
                finally:
                    cm.__exit__(None, None, None)
                self.bytes_fetched += len(data)
                return data[:n]
            if resp.status_code == 200:
                # Range ignored: keep this one stream, read it only as far as the parser asks
                self._stream = (cm, resp, resp.iter_bytes(64 * 1024))
                self._buffer = b""
                self._stream_pos = 0
                return self._read_stream(offset, n)
            cm.__exit__(None, None, None)
            raise HubError(f"{self.name}: the server answered {resp.status_code} to a range request")

    def _read_stream(self, offset: int, n: int) -> bytes:
        if offset != self._stream_pos - len(self._buffer):
            raise HubError(f"{self.name}: the server ignores Range and the reader asked for bytes out of order")
        _, _, it = self._stream
        while len(self._buffer) < n:
            try:
                chunk = next(it)
            except StopIteration:
                break
            except Exception as exc:
                raise HubError(f"{self.name}: the connection failed mid-file: {exc}") from None
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

HEADERS, DOWNLOADS = "headers", "hub"
_HEADER_SUFFIX = ".header"


def repo_folder(kind: str, repo: str) -> Path:
    """The cache folder of one Hub repository's headers (HEADERS) or files (DOWNLOADS), a folder per
    commit below; named as huggingface_hub's repo_folder_name, less its type: 'owner/name' -> 'owner--name'."""
    return settings.cache_dir() / kind / repo.replace("/", "--")


def cached_name(filename: str) -> str:
    """A file's path inside its repository as one file name in the cache: 'sub/x.gguf' -> 'sub--x.gguf'."""
    return filename.replace("/", "--")


def _cache_path(remote: RemoteFile) -> Path:
    return repo_folder(HEADERS, remote.hub.repo) / remote.commit / (cached_name(remote.hub.filename) + _HEADER_SUFFIX)


def _cached(hub: HubFile, commit: str | None) -> BytesSource | None:
    """A cached header for this file at this commit (any commit when offline and none is pinned)."""
    base = repo_folder(HEADERS, hub.repo)
    name = cached_name(hub.filename) + _HEADER_SUFFIX
    candidates = [base / commit / name] if commit else sorted(base.glob(f"*/{name}"))
    for p in candidates:
        meta = p.with_suffix(".json")
        if p.is_file() and meta.is_file():
            info = json.loads(meta.read_text())
            return BytesSource(p.read_bytes(), name=hub.uri, size_bytes=info["size_bytes"])
    return None


def _store(remote: RemoteFile, prefix: bytes) -> None:
    path = _cache_path(remote)
    with atomic_output(path) as out:
        out.write(prefix)
    with atomic_output(path.with_suffix(".json")) as out:
        out.write(
            json.dumps(
                {"size_bytes": remote.size_bytes, "etag": remote.etag, "commit": remote.commit, "url": remote.url}
            ).encode()
        )


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
        sources = [_cached(f, f.revision if f.revision and len(f.revision) == 40 else None) for f in files]
        missing = [f.uri for f, s in zip(files, sources) if s is None]
        if missing:
            raise HubError(f"HF_HUB_OFFLINE is set and these headers are not cached: {', '.join(missing)}")
        parsed = [parse_gguf(s) for s in sources]
        return RemoteHeader(join_shards(parsed, len(files) > 1), 0, sum(p.header_bytes for p in parsed), None)
    first = remote_file(files[0])
    remotes = [first] + (
        [] if len(files) == 1 else list(ThreadPoolExecutor(8).map(lambda f: remote_file(f, first.commit), files[1:]))
    )

    def one(remote: RemoteFile) -> tuple[object, int]:
        cached = _cached(remote.hub, remote.commit)
        if cached is not None:
            return parse_gguf(cached), 0
        src = HttpSource(remote)
        try:
            parsed, prefix = parse_gguf_keeping_bytes(src)
        finally:
            src.close()
        _store(remote, prefix)
        return parsed, src.bytes_fetched

    with ThreadPoolExecutor(min(8, len(remotes))) as pool:
        results = list(pool.map(one, remotes))
    parsed_files = [r[0] for r in results]
    fetched = sum(r[1] for r in results)
    header_bytes = sum(p.header_bytes for p in parsed_files)
    return RemoteHeader(join_shards(parsed_files, len(files) > 1), fetched, header_bytes, first.commit)


# -- downloads -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size_bytes: int
    sha256: str
    resumed_from: int  # bytes already on disk from an interrupted run


def local_dir(remote: RemoteFile) -> Path:
    return repo_folder(DOWNLOADS, remote.hub.repo) / remote.commit


def download(uri: str, progress=None) -> list[Downloaded]:
    """Fetch every shard of ``uri`` into the cache, resuming partial files (also left by another process),
    verifying each against the Hub's size and LFS sha256; only verified files get their final name."""
    files = shard_files(parse_uri(uri))
    first = remote_file(files[0])
    remotes = [first] + [remote_file(f, first.commit) for f in files[1:]]
    return [_download_one(r, progress) for r in remotes]


def _download_one(remote: RemoteFile, progress) -> Downloaded:
    from filelock import FileLock

    target = local_dir(remote) / cached_name(remote.hub.filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    state = target.with_name(target.name + ".part.json")
    expect_sha = remote.etag if remote.etag and re.fullmatch(r"[0-9a-f]{64}", remote.etag) else None
    with FileLock(str(target) + ".lock"):
        if target.exists() and target.stat().st_size == remote.size_bytes:
            return Downloaded(target, remote.size_bytes, expect_sha or "", 0)
        keep = part.exists() and state.exists() and json.loads(state.read_text()) == _state(remote)
        if not keep:
            part.unlink(missing_ok=True)
            state.write_text(json.dumps(_state(remote)))
        digest = hashlib.sha256()
        have = part.stat().st_size if part.exists() else 0
        with open(part, "ab+") as f:  # hash what an earlier run left
            f.seek(0)
            while block := f.read(1 << 20):
                digest.update(block)
        resumed = have
        if have < remote.size_bytes:
            have, digest = _fetch_into(remote, part, have, digest, progress)
        if have != remote.size_bytes:
            raise HubError(
                f"{remote.hub.uri}: the connection ended at byte {have} of {remote.size_bytes}; "
                "run the same command again to resume"
            )
        sha = digest.hexdigest()
        if expect_sha and sha != expect_sha:
            part.unlink(missing_ok=True)
            state.unlink(missing_ok=True)
            raise HubError(
                f"{remote.hub.uri}: corrupted download: sha256 {sha} is not the Hub's {expect_sha}; "
                "the partial file was deleted, run again to download it afresh"
            )
        os.replace(part, target)
        state.unlink(missing_ok=True)
        return Downloaded(target, have, sha, resumed)


def _state(remote: RemoteFile) -> dict:
    return {"url": remote.url, "commit": remote.commit, "etag": remote.etag, "size_bytes": remote.size_bytes}


def _fetch_into(remote: RemoteFile, part: Path, have: int, digest, progress):
    """Append the rest of the file to ``part``; returns (bytes now on disk, the running sha256)."""
    from huggingface_hub import get_session
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with get_session().stream("GET", remote.url, headers=headers, follow_redirects=True, timeout=30) as resp:
            if resp.status_code not in (200, 206):
                raise HubError(f"{remote.hub.uri}: the server answered {resp.status_code}")
            if have and resp.status_code == 200:  # Range ignored: start over rather than append
                have = 0
                digest = hashlib.sha256()
                part.write_bytes(b"")
            with open(part, "ab") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    if progress:
                        progress(have, remote.size_bytes)
                f.flush()
                os.fsync(f.fileno())
    except HubError:
        raise
    except Exception:
        pass
    return have, digest


def find_in_repo(repo: str, pattern: str, revision: str | None = None) -> str:
    """The one GGUF model in ``repo`` whose file name matches ``pattern`` (a glob); for a split model,
    its first shard. An error lists the candidates when there are several models or none."""
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(repo, revision=revision)
    except Exception as exc:
        raise _map_error(exc, f"hf://{repo}") from None
    matches = sorted(f for f in files if f.endswith(".gguf") and fnmatch.fnmatch(Path(f).name, pattern))
    models = sorted({_first_shard(f) for f in matches})
    if len(models) != 1:
        raise HubError(
            f"hf://{repo}: {len(models)} GGUF models match {pattern!r}"
            + (f": {', '.join(models[:8])}" if models else "")
            + "; make the registry's pattern match one"
        )
    return models[0]


def _first_shard(filename: str) -> str:
    s = parse_shard_name(filename)
    return filename if s is None else s.shard(1)


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
    # the pattern matches a file's name: the last part of its cached_name
    return any(
        fnmatch.fnmatch(p.name.removesuffix(_HEADER_SUFFIX).rsplit("--", 1)[-1], entry.hf.pattern)
        for p in base.glob(f"*/*{_HEADER_SUFFIX}")
    )


def downloaded_paths(uri: str, commit: str | None) -> list[Path] | None:
    """The verified local files of a Hub model (every shard), at ``commit`` or, when None, at any
    commit downloaded; None unless all shards are there."""
    files = shard_files(parse_uri(uri))
    base = repo_folder(DOWNLOADS, files[0].repo)
    commits = [commit] if commit else sorted(p.name for p in base.glob("*") if p.is_dir())
    for c in commits:
        paths = [base / c / cached_name(f.filename) for f in files]
        if all(p.is_file() for p in paths):
            return paths
    return None
