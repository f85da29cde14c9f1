"""`harness hardware`: the GPU and host profiles plans are made for, and this host's RAM."""

from __future__ import annotations

from dataclasses import asdict

import click

from harness.cli.output import echo_json
from harness.offload.hardware import host_available_bytes, host_ram_bytes, load_profiles, measured_host_profile
from harness.text import human_bytes, table


@click.command()
@click.option("--measure", is_flag=True, help="Also measure this host's memory bandwidth and compute.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON object instead of tables.")
def hardware(measure: bool, json_: bool) -> None:
    """The hardware profiles plans are made for (hardware.toml), and this host's RAM."""
    prof = load_profiles()
    hosts = list(prof.hosts.values()) + ([measured_host_profile()] if measure else [])
    if json_:
        echo_json(
            {
                "gpus": [asdict(g) for g in prof.gpus.values()],
                "hosts": [asdict(h) for h in hosts],
                "this_host": {"ram_bytes": host_ram_bytes(), "available_bytes": host_available_bytes()},
            }
        )
        return
    click.echo(
        table(
            ["gpu", "name", "memory", "bandwidth GB/s", "efficiency", "fp16 TFLOPS", "link GB/s", "reserve"],
            [
                [
                    g.key,
                    g.name,
                    human_bytes(g.memory_bytes),
                    g.bandwidth_gbps,
                    g.efficiency,
                    g.fp16_tflops,
                    g.link_gbps,
                    human_bytes(g.reserve_bytes),
                ]
                for g in prof.gpus.values()
            ],
            right=[False, False, True, True, True, True, True, True],
        )
    )
    click.echo()
    click.echo(
        table(
            ["host", "name", "bandwidth GB/s", "efficiency", "effective GB/s"],
            [
                [h.key, h.name, f"{h.bandwidth_gbps:.1f}", h.efficiency, f"{h.bandwidth_gbps * h.efficiency:.1f}"]
                for h in hosts
            ],
            right=[False, False, True, True, True],
        )
    )
    click.echo(f"\nthis host: {human_bytes(host_ram_bytes())} RAM, {human_bytes(host_available_bytes())} available")
