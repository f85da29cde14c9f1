"""The floors hold: the light floors import nothing heavy, and no module imports a floor above its own.

Floors, lowest first: base (errors, settings, text) < gguf < quant < offload
< models | llama (side by side: neither imports the other) < plan < run < bench < compare < cli <
the package's front door (harness/__init__, __main__). Imports are read from the source with ast,
so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import harness

PACKAGE = Path(harness.__file__).parent

HEAVY = ("llama_cpp", "huggingface_hub", "matplotlib", "jinja2", "filelock")

# module name (or package prefix) -> floor; the longest matching prefix wins
FLOORS = {
    "harness.errors": 0,
    "harness.settings": 0,
    "harness.text": 0,
    "harness.gguf": 1,
    "harness.quant": 2,
    "harness.offload": 3,
    "harness.models": 4,
    "harness.llama": 4,
    "harness.plan": 5,
    "harness.plan_cache": 5,
    "harness.run": 6,
    "harness.bench": 7,
    "harness.compare": 8,
    "harness.cli": 9,
    "harness": 10,
    "harness.__main__": 10,
}
# same floor, but strangers: the model registry/hub and the engine never import each other
APART = {"harness.models": "harness.llama", "harness.llama": "harness.models"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules(*subpackages: str) -> list[str]:
    """Every module of these subpackages, found on disk (collecting imports none of them)."""
    return sorted(_module_name(p) for sub in subpackages for p in (PACKAGE / sub).rglob("*.py"))


LIGHT = _package_modules("gguf", "quant", "offload", "cli") + [
    "harness.models.registry",
    "harness.models.resolve",
    "harness.plan",
]


@pytest.mark.parametrize("module", LIGHT)
def test_light_floors_import_nothing_heavy(module: str) -> None:
    code = (
        f"import sys, json; import {module}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    heavy = {m.split(".")[0] for m in json.loads(r.stdout)}
    assert not heavy, f"import {module} loads {sorted(heavy)}: import them where they are used"


def _floor(module: str) -> tuple[str, int] | None:
    """(the FLOORS key, its floor) for a harness module; None for a module no floor names."""
    for prefix in sorted(FLOORS, key=len, reverse=True):
        if module == prefix or (prefix != "harness" and module.startswith(prefix + ".")):
            return prefix, FLOORS[prefix]
    return None


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every harness module this one imports, at any depth of the code."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "harness":
                continue
            # `from harness import settings` imports the module harness.settings, not the front door
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            if len(subs) < len(node.names):
                found.append((node.lineno, target))
            found += [(node.lineno, s) for s in subs]
    return found


def test_no_module_imports_upward() -> None:
    wrong, unplaced = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        here = _floor(module)
        if here is None:
            unplaced.append(module)
            continue
        tree = ast.parse(path.read_text(), str(path))
        for line, target in _imported(tree, module, path.name == "__init__.py"):
            there = _floor(target)
            if there is None:
                unplaced.append(target)
            elif there[1] > here[1] or APART.get(here[0]) == there[0]:
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (floor {here[1]}, {here[0]}) "
                    f"imports {target} (floor {there[1]}, {there[0]})"
                )
    assert not unplaced, f"modules on no floor (add them to FLOORS): {sorted(set(unplaced))}"
    assert not wrong, "imports that go up a floor:\n" + "\n".join(wrong)


def test_the_floor_map_reads_imports_as_meant() -> None:
    """The checker itself, on code written for it: what counts as an upward import."""
    code = (
        "from harness import settings\nfrom harness import read_header\nimport harness.plan\n"
        "def f():\n    from . import rules\n    from ..offload import solver\n"
    )
    found = _imported(ast.parse(code), "harness.quant.sizes", is_package=False)
    assert found == [
        (1, "harness.settings"),
        (2, "harness"),
        (3, "harness.plan"),
        (5, "harness.quant.rules"),
        (6, "harness.offload.solver"),
    ]
    assert [_floor(m)[1] for _, m in found] == [0, 10, 5, 2, 3]
    assert _floor("harness.gguf.reader") == ("harness.gguf", 1) and _floor("harness.elsewhere") is None
