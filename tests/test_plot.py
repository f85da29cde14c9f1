"""`plan --plot` and `compare --plot`: a PNG is written whole or not at all, and a path that cannot be written is
one line, before the work."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.cli.charts import plan_chart
from harness.plan import PlanRequest, make_plan

PNG = b"\x89PNG\r\n\x1a\n"
# an architecture-only entry on two profile GPUs, the fitted formula's compute: no file, no engine needed
PLAN = ["plan", "70b-q4_k_m", "--gpu", "rtx-4090", "--gpus", "2", "--compute", "formula"]


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_plan_plot_writes_a_png_and_the_same_plan(tmp_path) -> None:
    png = tmp_path / "charts" / "plan.png"  # a folder not there yet is made
    r = _invoke(*PLAN, "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert r.stderr == f"chart written to {png}\n"
    assert r.stdout == _invoke(*PLAN).stdout  # the chart changes nothing in the plan
    assert [p.name for p in png.parent.iterdir()] == ["plan.png"]  # no temporary file left beside it


def test_a_plan_without_devices_draws_the_host_alone(tmp_path) -> None:
    result = make_plan(PlanRequest(model="8b-q4_k_m", compute="formula"))
    host_only = replace(result, plan=replace(result.plan, devices=(), n_gpu_layers=0))
    plan_chart(host_only, "Q4_K_M", str(tmp_path / "host.png"))
    assert (tmp_path / "host.png").read_bytes()[:8] == PNG


def test_compare_plot_writes_a_png(tmp_path) -> None:
    png = tmp_path / "compare.png"
    r = _invoke("compare", "8b-q4_k_m", "--quants", "Q4_K_M,Q2_K", "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == PNG and r.stderr.endswith(f"chart written to {png}\n")


@pytest.mark.parametrize("command", [PLAN, ["compare", "8b-q4_k_m", "--quants", "Q2_K"]])
def test_a_failed_write_leaves_no_half_written_png(tmp_path, monkeypatch, command) -> None:
    """The disk fills part way through the PNG: one line, the old chart untouched, no temporary file left."""
    from matplotlib.figure import Figure

    def savefig(self, out, **kwargs) -> None:
        out.write(PNG + b"half a chart")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig)
    png = tmp_path / "chart.png"
    png.write_bytes(b"the chart before")
    r = _invoke(*command, "--plot", str(png))
    assert r.exit_code == 2  # after compare's progress lines, one:
    assert r.stderr.splitlines()[-1] == f"error: --plot {png}: cannot write the chart: No space left on device"
    assert png.read_bytes() == b"the chart before"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]


@pytest.mark.parametrize("command", ["plan", "compare"])
def test_a_bad_path_is_one_line_before_the_work(tmp_path, monkeypatch, command) -> None:
    def work(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr("harness.cli.plan.make_plan", work)
    monkeypatch.setattr("harness.cli.compare.compare_quants", work)
    (tmp_path / "a-file").write_text("")
    under_a_file = tmp_path / "a-file" / "chart.png"
    r = _invoke(command, "8b-q4_k_m", "--plot", str(under_a_file))
    assert (r.exit_code, r.stderr) == (
        2,
        f"error: --plot {under_a_file}: {tmp_path / 'a-file'} is not a folder this user can write in\n",
    )
    r = _invoke(command, "8b-q4_k_m", "--plot", str(tmp_path))
    assert (r.exit_code, r.stderr) == (
        2,
        f"error: --plot {tmp_path}: is a folder; name the PNG file to write, e.g. {tmp_path / 'chart.png'}\n",
    )
