"""Plots shared by the notebooks (matplotlib, imported lazily)."""

from __future__ import annotations

from . import hardware


def gpu_catalog(highlight="T4"):
    """Memory and bandwidth of every catalog GPU side by side, ``highlight`` in colour."""
    import matplotlib.pyplot as plt

    keys = list(hardware.GPUS)
    chosen = hardware.get_gpu(highlight) if highlight else None
    colors = ["tab:orange" if hardware.GPUS[k] == chosen else "tab:gray" for k in keys]
    fig, (ax_mem, ax_bw) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    ax_mem.barh(keys, [hardware.GPUS[k].memory_gib for k in keys], color=colors)
    ax_mem.set_xlabel("memory torch reports (GiB)")
    ax_bw.barh(keys, [hardware.GPUS[k].bandwidth_gbs for k in keys], color=colors)
    ax_bw.set_xlabel("memory bandwidth (GB/s): sets batch-1 decode speed")
    ax_mem.invert_yaxis()
    fig.suptitle(f"GPU catalog ({chosen.name} highlighted)" if chosen else "GPU catalog")
    fig.tight_layout()
    return fig
