"""Notebook 03's figures: each title says where its numbers were measured (matplotlib, imported lazily)."""

from __future__ import annotations

from .diffusion_8gb_sweeps import Measurements


def _cpu(where: str) -> bool:
    return "(CUDA)" not in where


def plot_steps(result: Measurements, precision: str = "float32"):
    """Latency, peak memory and deviation against steps (the circulated table, measured)."""
    import matplotlib.pyplot as plt

    rows = sorted(result.select("steps", precision=precision, offload=False), key=lambda r: r["steps"])
    steps = [r["steps"] for r in rows]
    time_label = "latency on this CPU (s)" if _cpu(result.where) else "latency (s)"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, ("latency_s", "peak_mib", "error"),
                              (time_label, "peak memory (MiB)", "deviation from the 200-step solution\n"
                               "(numerical, random weights: not quality)")):
        ax.plot(steps, [r[key] for r in rows], "o-")
        ax.set_xlabel("Euler steps")
        ax.set_ylabel(label)
    axes[1].set_ylim(0, max(r["peak_mib"] for r in rows) * 1.2)
    axes[2].set_yscale("log")
    fig.suptitle(f"s2mel stage, {precision}: time grows with steps, memory does not\n{result.where}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_variants(result: Measurements, gpu_expectation: str = ""):
    """Peak memory and latency of the side-by-side rows (precision x offload), latency labelled by device.

    On a CPU the latency panel is a CPU effect: ``gpu_expectation`` (a short line) is printed under it.
    """
    import matplotlib.pyplot as plt

    rows = result.select("variants") or result.rows
    labels = [f"{r['precision']}, {'offload' if r['offload'] else 'resident'}" for r in rows]
    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_mem.barh(labels, [r["peak_mib"] for r in rows], color="tab:blue")
    ax_mem.set_xlabel("peak memory (MiB): bytes, the same on a GPU")
    cpu = _cpu(result.where)
    ax_time.barh(labels, [r["latency_s"] for r in rows], color="tab:gray" if cpu else "tab:orange")
    ax_time.set_xlabel("latency ON THIS CPU (s): a CPU effect" if cpu else "latency (s)")
    for ax in (ax_mem, ax_time):
        ax.invert_yaxis()
    if cpu and gpu_expectation:
        ax_time.text(0, -0.28, gpu_expectation, transform=ax_time.transAxes, fontsize=8, va="top", wrap=True)
    fig.suptitle(f"{rows[0]['steps']} steps: precision and offloading\n{result.where}", fontsize=10)
    fig.tight_layout()
    return fig
