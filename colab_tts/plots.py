"""Plots shared by the notebooks (matplotlib, imported lazily). Notebook 02's are in colab_tts.lessons.kv_sizing."""

from __future__ import annotations

from . import hardware
from .models import covered_weight_gib


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


def weights_fit(dtype="float16", gpus=("T4", "RTX-3070", "RTX-4060", "L4", "A100-40GB")):
    """Weights-only size of each covered model against each GPU's memory (notebook 00's summary)."""
    import matplotlib.pyplot as plt

    dtype = hardware.dtype_name(dtype)
    specs = [hardware.get_gpu(g) for g in gpus]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    weights = covered_weight_gib(dtype)  # the sizes weights_fit_rows prints
    names, sizes = list(weights), list(weights.values())
    ax.barh(names, sizes, color="tab:blue", label=f"weights in {dtype}")
    for spec, style in zip(specs, ["-", "--", ":", "-.", (0, (1, 3))]):
        ax.axvline(spec.memory_gib, color="tab:orange" if not spec.bf16 else "tab:gray", ls=style,
                   label=f"{spec.name} ({spec.memory_gib:.2f} GiB)")
    ax.invert_yaxis()
    ax.set_xlabel("GiB")
    ax.set_title("Weights alone against GPU memory (activations and KV cache come on top)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
