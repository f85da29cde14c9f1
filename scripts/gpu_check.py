"""`make gpu-check`: the harness's plans against llama.cpp and the driver on this machine's NVIDIA GPU.

On a fresh machine with an NVIDIA GPU, in one go and within ten minutes (a 16-core host: the CUDA build
takes most of it):

1. the GPU as nvidia-smi sees it (name, compute capability, driver, memory);
2. `make install` with CUDA=1 and CUDA_ARCH set to this card's compute capability (llama-cpp-python's CUDA
   kernels for this card alone, CMAKE_BUILD_PARALLEL_LEVEL = the core count), then `make models`;
3. for each real model with a file here, at contexts 512, 8192 and its training context, on the whole card
   and under a --budget that leaves part of the model on the host: `harness plan --local --verify --json`,
   which loads it on the card with the plan's split and sets llama.cpp's buffers and nvidia-smi's used memory
   beside the plan (the runtime reserve measured: what the load added beyond llama.cpp's buffers);
4. registry models known by their architecture (Llama 3.1 8B at 8k f16 and 32k q8_0, 70B at 8k), planned for
   the mission's A100 40GB profile and verified as stand-ins (header + zero weights, written here: nothing to
   download) on the local card: `plan MODEL --gpu a100-40gb --local --verify --json`;
5. one `harness bench` and one `harness compare`.

Every step runs as a process of its own with its own timeout, cut to what is left of the overall deadline;
a step that fails or times out is recorded (its status, exit code, the tail of its stderr) and the script
goes on. The report, ONE JSON file (default gpu-check.json, path printed at the end), is rewritten after
every step, so a check cut short still leaves what it measured. Exit status 0 when every step succeeded, 1
otherwise. Standard library only: it runs before the venv exists (`python3 scripts/gpu_check.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from harness.llama import nvidia  # noqa: E402  (standard library only, like this script)

REPORT_VERSION = 1
DEADLINE_S = 570.0  # the whole check, build included, inside ten minutes
WRITE_MARGIN_S = 5.0  # kept back from the deadline for the last report
CONTEXTS = (512, 8192, 0)  # 0: the model's training context, as llama.cpp takes n_ctx 0
DEFAULT_MODELS = ("gemma3-270m-q4_k_m", "smollm2-135m-q4_1")
# Registry entries known by their architecture, verified as stand-ins (header + zero weights, written on the
# machine: nothing to download) with the plan made for a named GPU profile, loaded on the local card: the
# mission's GPU budget (an A100 40GB) checked against llama.cpp's buffers and nvidia-smi on a real CUDA device.
# (model, GPU profile, context, KV type)
STANDIN_CASES = (
    ("8b-q4_k_m", "a100-40gb", 8192, "f16"),
    ("8b-q4_k_m", "a100-40gb", 32768, "q8_0"),
    ("70b-q4_k_m", "a100-40gb", 8192, "f16"),
)
COMPARE_QUANTS = "Q8_0,Q4_K_M"
TAIL_CHARS = 4000
# each step's own limit (seconds); the overall deadline cuts it further
TIMEOUTS_S = {
    "build": 480.0,
    "models": 150.0,
    "engine": 60.0,
    "registry": 30.0,
    "inspect": 30.0,
    "plan": 90.0,
    "bench": 120.0,
    "compare": 150.0,
}
BYTE_KINDS = ("weights_bytes", "kv_bytes", "compute_bytes")
MIB = 1 << 20

# (command, timeout_s, env) -> (exit code or None on timeout, stdout, stderr)
Runner = Callable[[Sequence[str], float, dict[str, str]], tuple[int | None, str, str]]


@dataclass
class Step:
    """One command of the check, as the report records it."""

    name: str
    command: list[str]
    status: str  # "ok", "failed", "timeout", "skipped"
    returncode: int | None = None
    seconds: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    why: str = ""  # a skipped or failed step: why, in words

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_process(cmd: Sequence[str], timeout_s: float, env: dict[str, str]) -> tuple[int | None, str, str]:
    """Run ``cmd`` in a process group of its own; on timeout the whole group (make, pip, cmake, nvcc…) is
    killed and the exit code is None. A command that cannot be started is exit code 127, as a shell has it."""
    try:
        proc = subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        return 127, "", f"{cmd[0]}: {exc.strerror or exc}\n"
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Check:
    """The steps run so far, the report they make, and the clock they share."""

    def __init__(
        self,
        out: Path,
        runner: Runner = run_process,
        deadline_s: float = DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
        env: dict[str, str] | None = None,
    ) -> None:
        self.out = out
        self.runner = runner
        self.clock = clock
        self.t0 = clock()
        self.deadline = self.t0 + deadline_s
        self.env = dict(os.environ if env is None else env)
        self.steps: list[Step] = []
        self.report: dict[str, Any] = {
            "report": "gpu-check",
            "version": REPORT_VERSION,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {"hostname": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "gpus": [],
            "build": {},
            "models": {},
            "cases": [],
            "bench": None,
            "compare": None,
            "steps": [],
        }

    def left_s(self) -> float:
        return self.deadline - self.clock() - WRITE_MARGIN_S

    def step(self, name: str, cmd: Sequence[str], kind: str) -> tuple[Step, str]:
        """Run one step (its limit: the kind's timeout or what is left, the smaller); (record, full stdout)."""
        limit = min(TIMEOUTS_S[kind], self.left_s())
        if limit < 1:
            s = Step(name, list(cmd), "skipped", why="the overall deadline was reached")
            self._record(s)
            return s, ""
        t = self.clock()
        try:
            rc, out, err = self.runner(cmd, limit, self.env)
        except Exception as exc:  # the runner itself broke: recorded as this step's failure, the check goes on
            rc, out, err = -1, "", f"{type(exc).__name__}: {exc}\n"
        seconds = round(self.clock() - t, 3)
        if rc is None:
            s = Step(name, list(cmd), "timeout", None, seconds, out[-TAIL_CHARS:], err[-TAIL_CHARS:], f"{limit:.0f} s")
        else:
            status = "ok" if rc == 0 else "failed"
            why = "" if rc == 0 else _last_line(err) or _last_line(out)
            s = Step(name, list(cmd), status, rc, seconds, out[-TAIL_CHARS:], err[-TAIL_CHARS:], why)
        self._record(s)
        return s, out

    def skip(self, name: str, why: str) -> None:
        self._record(Step(name, [], "skipped", why=why))

    def _record(self, s: Step) -> None:
        self.steps.append(s)
        self.write()
        mark = {"ok": "ok", "failed": "FAILED", "timeout": "TIMEOUT", "skipped": "skipped"}[s.status]
        print(f"gpu-check: {s.name}: {mark} ({s.seconds:.1f} s){': ' + s.why if s.why else ''}", file=sys.stderr)

    def write(self) -> None:
        self.report["steps"] = [asdict(s) for s in self.steps]
        self.report["wall_s"] = round(self.clock() - self.t0, 3)
        statuses = [s.status for s in self.steps]
        self.report["summary"] = {status: statuses.count(status) for status in ("ok", "failed", "timeout", "skipped")}
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=2) + "\n")
        tmp.replace(self.out)

    @property
    def all_ok(self) -> bool:
        return all(s.ok for s in self.steps)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- the machine ------------------------------------------------------------------------------------------------

GPU_FIELDS = ("index", "name", "compute_cap", "driver_version", "memory.total", "pci.bus_id")


def gpus_of(text: str) -> list[dict[str, Any]]:
    """nvidia-smi's GPU_FIELDS lines as the report keeps them."""
    out = []
    for index, name, cap, driver, total, bus in nvidia.parse_csv(text, len(GPU_FIELDS)):
        out.append(
            {
                "index": int(index),
                "name": name,
                "compute_cap": cap,
                "driver_version": driver,
                "memory_total_bytes": int(float(total) * MIB) if not total.startswith("[") else None,
                "pci_bus_id": nvidia.bus_id(bus),
            }
        )
    return out


def cuda_arch(gpus: Sequence[dict[str, Any]]) -> str:
    """CMAKE_CUDA_ARCHITECTURES for these cards: compute capability 9.0 -> "90"; several kinds: "80;90"."""
    caps = sorted({g["compute_cap"].replace(".", "") for g in gpus if g["compute_cap"][:1].isdigit()}, key=int)
    return ";".join(caps)


def build_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of the build: every core, and CUDA's bin folder on PATH when nvcc is not (CMake's CUDA
    language needs nvcc; toolkits install it in /usr/local/cuda/bin, often left off PATH)."""
    out = dict(env)
    out.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    path = out.get("PATH", "")
    has_nvcc = any((Path(p) / "nvcc").exists() for p in path.split(os.pathsep) if p)
    cuda_home = Path(out.get("CUDA_HOME") or out.get("CUDA_PATH") or "/usr/local/cuda")
    if not has_nvcc and (cuda_home / "bin" / "nvcc").exists():
        out["PATH"] = f"{cuda_home / 'bin'}{os.pathsep}{path}"
    return out


ENGINE_PROBE = """
import json, llama_cpp
from harness.llama import engine, rpc
libs = sorted(p.name for p in rpc.lib_dir().glob("lib*.so*"))
print(json.dumps({
    "llama_cpp_python": llama_cpp.__version__,
    "libraries": libs,
    "cuda_library": any(name.startswith("libggml-cuda") for name in libs),
    "local_gpus": [vars(g) for g in engine.local_gpus()],
    "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
}))
"""


# --- cases -------------------------------------------------------------------------------------------------------


def device_record(d: dict[str, Any]) -> dict[str, Any]:
    """One planned device of `harness plan --json`: predicted against llama.cpp's buffers and the driver."""
    predicted = {k: d[k] for k in (*BYTE_KINDS, "reserve_bytes", "total_bytes")}
    rec: dict[str, Any] = {
        "name": d["name"],
        "budget_bytes": d["budget_bytes"],
        "n_layers": d["n_layers"],
        "holds_output": d["holds_output"],
        "predicted": predicted,
        "llama_cpp": None,
        "llama_cpp_minus_predicted": None,
        "nvidia_smi": None,
        "measured_reserve_bytes": None,
        "predicted_reserve_bytes": d["reserve_bytes"],
        "driver_minus_predicted_bytes": None,
    }
    a = d.get("actual")
    if not a:
        return rec
    rec["llama_cpp"] = {k: a[k] for k in (*BYTE_KINDS, "total_bytes")}
    rec["llama_cpp_minus_predicted"] = {k: a[k] - d[k] for k in BYTE_KINDS}
    if a.get("gpu_used_delta_bytes") is not None:
        rec["nvidia_smi"] = {
            "used_before_bytes": a["gpu_used_before_bytes"],
            "used_after_bytes": a["gpu_used_after_bytes"],
            "used_delta_bytes": a["gpu_used_delta_bytes"],
        }
        rec["measured_reserve_bytes"] = a["measured_reserve_bytes"]
        # the plan's whole footprint on the card (weights + KV + compute + reserve) against the driver's count
        rec["driver_minus_predicted_bytes"] = a["gpu_used_delta_bytes"] - d["total_bytes"]
    return rec


def host_record(h: dict[str, Any]) -> dict[str, Any]:
    kinds = (*BYTE_KINDS, "output_bytes", "total_bytes")
    a = h.get("actual")
    return {
        "predicted": {k: h[k] for k in kinds},
        "llama_cpp": {k: a[k] for k in kinds} if a else None,
        "llama_cpp_minus_predicted": {k: a[k] - h[k] for k in kinds} if a else None,
    }


def case_record(model: str, ctx: int, kind: str, budget_bytes: int | None, s: Step, plan: Any) -> dict[str, Any]:
    """One `plan --local --verify` case as the report keeps it."""
    rec: dict[str, Any] = {
        "model": model,
        "ctx_asked": ctx,
        # "full card", "partial" (a --budget below what the whole model needs), or "stand-in, PROFILE budget"
        "kind": kind,
        "budget_bytes": budget_bytes,
        "step": s.name,
        "status": s.status,
        "seconds": s.seconds,
    }
    if not isinstance(plan, dict):
        return rec
    rec.update(
        n_ctx=plan["n_ctx"],
        kv_type=plan["kv_type"],
        flash_attn=plan["flash_attn"],
        n_ubatch=plan["n_ubatch"],
        verdict=plan["verdict"],
        n_gpu_layers=plan["n_gpu_layers"],
        n_layers_total=plan["n_layers_total"],
        n_layers_offloaded_actual=plan["n_layers_offloaded_actual"],
        partial=0 < plan["n_gpu_layers"] < plan["n_layers_total"],
        sources=plan["sources"],
        devices=[device_record(d) for d in plan["devices"]],
        host=host_record(plan["host"]),
        predicted_tg_tokens_per_s=plan["predicted_tg_tokens_per_s"],
        notes=plan["notes"],
    )
    return rec


def partial_budget(plan: Any, model_bytes: int | None) -> int | None:
    """A --budget that holds about half of what the first device holds with the whole card (reserve left out:
    with --budget the plan reserves only ggml-cuda's pool), so that part of the model stays on the host."""
    if isinstance(plan, dict) and plan.get("devices"):
        d = plan["devices"][0]
        need = sum(d[k] for k in BYTE_KINDS)
    elif model_bytes:
        need = model_bytes
    else:
        return None
    return max(MIB, need // 2 // MIB * MIB)


# --- the check ---------------------------------------------------------------------------------------------------


def run_check(
    c: Check, models: Sequence[str], contexts: Sequence[int] = CONTEXTS, build: bool = True, standins: bool = True
) -> None:
    harness = [str(ROOT / ".venv" / "bin" / "harness")]
    python = str(ROOT / ".venv" / "bin" / "python")

    smi = ["nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"]
    s, out = c.step("nvidia-smi", smi, "engine")
    if s.ok:
        try:
            c.report["gpus"] = gpus_of(out)
        except nvidia.NvidiaSmiError as exc:
            s.status, s.why = "failed", str(exc)
    if not c.report["gpus"]:
        for name in ("build", "models", "cases", "bench", "compare"):
            c.skip(name, "no NVIDIA GPU answered nvidia-smi: nothing to check on")
        return
    arch = cuda_arch(c.report["gpus"])
    make_vars = ["CUDA=1", f"CUDA_ARCH={arch}", f"PYTHON={sys.executable}"]
    benv = build_env(c.env)
    c.report["build"] = {
        "cuda_arch": arch,
        "make": ["make", "install", *make_vars],
        "cmake_build_parallel_level": benv["CMAKE_BUILD_PARALLEL_LEVEL"],
    }
    c.env = benv
    if build:
        s, _ = c.step("build", ["make", "install", *make_vars], "build")
        s, _ = c.step("models", ["make", "models", *make_vars], "models")
    s, _ = c.step("nvcc", ["nvcc", "--version"], "engine")
    release = [line.strip() for line in s.stdout_tail.splitlines() if "release" in line]
    c.report["build"]["nvcc"] = (release[0] if release else _last_line(s.stdout_tail)) if s.ok else None
    s, out = c.step("engine", [python, "-c", ENGINE_PROBE], "engine")
    c.report["build"]["engine"] = _json(out) if s.ok else None

    s, out = c.step("registry", [*harness, "models", "--json"], "registry")
    listed = {m["name"]: m for m in _json(out) or []} if s.ok else {}
    here = [m for m in models if listed.get(m, {}).get("state") == "downloaded"]
    for m in models:
        if m not in here:
            c.skip(f"cases {m}", f"{m} has no file here ({listed.get(m, {}).get('state', 'not listed')})")

    for i, model in enumerate(here):
        s, out = c.step(f"inspect {model}", [*harness, "inspect", model, "--json"], "inspect")
        header = _json(out) if s.ok else None
        train_ctx = header.get("context_length") if isinstance(header, dict) else None
        c.report["models"][model] = {
            "file_bytes": listed[model].get("size_bytes"),
            "context_length": train_ctx,
            "architecture": header.get("architecture") if isinstance(header, dict) else None,
        }
        done: set[int] = set()
        for ctx in contexts:
            if ctx == 0 and train_ctx in done:
                continue  # the training context is one already checked
            done.add(train_ctx if ctx == 0 and train_ctx else ctx)
            plan_cmd = [*harness, "plan", model, "--local", "--verify", "--json", "--ctx", str(ctx)]
            s, out = c.step(f"plan {model} ctx {ctx} full card", plan_cmd, "plan")
            full = _json(out) if s.ok else None
            c.report["cases"].append(case_record(model, ctx, "full card", None, s, full))
            c.write()
            budget = partial_budget(full, listed[model].get("size_bytes"))
            if budget is None:
                continue
            s, out = c.step(f"plan {model} ctx {ctx} budget {budget}", [*plan_cmd, "--budget", str(budget)], "plan")
            part = _json(out) if s.ok else None
            c.report["cases"].append(case_record(model, ctx, "partial", budget, s, part))
            c.write()
        if i == 0:  # the first model's bench, before the second model's cases: the deadline cuts the last
            s, out = c.step(f"bench {model}", [*harness, "bench", model, "--json", "--reps", "3"], "bench")
            c.report["bench"] = {"model": model, "seconds": s.seconds, "records": _json(out) if s.ok else None}
            c.write()
    for model, gpu, ctx, kv in STANDIN_CASES if standins else ():
        cmd = [*harness, "plan", model, "--gpu", gpu, "--local", "--verify", "--json", "--ctx", str(ctx)]
        s, out = c.step(f"plan {model} --gpu {gpu} ctx {ctx} kv {kv} (stand-in)", [*cmd, "--kv-type", kv], "plan")
        plan = _json(out) if s.ok else None
        c.report["cases"].append(case_record(model, ctx, f"stand-in, {gpu} budget", None, s, plan))
        c.write()
    if here:
        model = here[0]
        cmd = [*harness, "compare", model, "--quants", COMPARE_QUANTS, "--chunks", "2", "--reps", "1", "--json"]
        s, out = c.step(f"compare {model}", cmd, "compare")
        c.report["compare"] = {"model": model, "seconds": s.seconds, "result": _json(out) if s.ok else None}
    c.write()


def main(argv: list[str] | None = None, runner: Runner = run_process) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check.json", help="The JSON report (default gpu-check.json).")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S, help="Seconds for the whole check.")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="Registry names, comma-separated.")
    ap.add_argument("--no-build", action="store_true", help="Use the venv as it is (no make install/models).")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    c = Check(out, runner, args.deadline)
    try:
        run_check(c, [m for m in args.models.split(",") if m], build=not args.no_build)
    finally:
        c.report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        c.write()
        print(out)
    return 0 if c.all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
