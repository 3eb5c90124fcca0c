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


def kv_budget(plans, labels=None):
    """Stacked bars of where each GPU's memory goes under vLLM: weights, activations, ... KV, unreserved."""
    import matplotlib.pyplot as plt

    parts = [("weights", "weights_gib", "tab:blue"), ("activations", "activation_gib", "tab:orange"),
             ("non-torch", "non_torch_gib", "tab:purple"), ("CUDA graphs", "cudagraph_gib", "tab:pink"),
             ("KV cache", "kv_cache_gib", "tab:green"), ("unreserved (1 - gmu)", "unreserved_gib", "lightgray")]
    labels = labels or [f"{p.gpu.name}, vLLM {p.vllm_version}\nmax_model_len={p.max_model_len:,}" for p in plans]
    fig, ax = plt.subplots(figsize=(max(6, 3.2 * len(plans)), 4.5))
    bottoms = [0.0] * len(plans)
    for name, attr, color in parts:
        values = [max(0.0, getattr(p, attr)) for p in plans]
        ax.bar(labels, values, bottom=bottoms, color=color, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    for i, p in enumerate(plans):
        ax.text(i, p.weights_gib + p.activation_gib + p.non_torch_gib + p.cudagraph_gib + p.kv_cache_gib / 2,
                f"{p.kv_cache_tokens:,} tokens", ha="center", va="center", fontsize=9)
    ax.set_ylabel("GiB")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"vLLM memory budget: {plans[0].model.name}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def kv_capacity_vs_gmu(model, gpus=("T4", "L4", "A100-40GB"), gmus=None, need_tokens=None, **plan_kwargs):
    """KV-cache tokens vLLM gets against gpu_memory_utilization, one line per GPU."""
    import matplotlib.pyplot as plt

    from .kv_cache import plan_vllm

    gmus = gmus or [round(0.5 + 0.025 * i, 3) for i in range(20)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in gpus:
        tokens = []
        for g in gmus:
            try:
                tokens.append(plan_vllm(model, key, gpu_memory_utilization=g, **plan_kwargs).kv_cache_tokens)
            except ValueError:  # the weights alone do not fit at this utilization
                tokens.append(0)
        ax.plot(gmus, tokens, marker="o", ms=3, label=hardware.get_gpu(key).name)
    if need_tokens:
        ax.axhline(need_tokens, color="k", ls="--", lw=1, label=f"one request: {need_tokens:,} tokens")
    ax.set_xlabel("gpu_memory_utilization")
    ax.set_ylabel("KV cache (tokens)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("KV capacity against gpu_memory_utilization")
    fig.tight_layout()
    return fig


def weights_fit(dtype="float16", gpus=("T4", "RTX-3070", "RTX-4060", "L4", "A100-40GB")):
    """Weights-only size of each covered model against each GPU's memory (notebook 00's summary)."""
    import matplotlib.pyplot as plt

    dtype = hardware.dtype_name(dtype)
    specs = [hardware.get_gpu(g) for g in gpus]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    names = list(hardware.COVERED_MODELS)
    sizes = [params * hardware.DTYPE_BYTES[dtype] / hardware.GIB for params, _ in hardware.COVERED_MODELS.values()]
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


def fit_heatmap(rows, title="Share of GPU memory one request takes (OOM: does not fit)"):
    """kv_cache.fit_rows as a grid: systems x GPUs, coloured by the share of memory, OOM marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    gpus = [k for k in rows[0] if k in hardware.GPUS]
    systems = [r["system"] for r in rows]
    share = np.array([[r["total GiB"] / hardware.GPUS[g].memory_gib for g in gpus] for r in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(gpus) + 3, 0.6 * len(rows) + 1.6))
    image = ax.imshow(np.minimum(share, 1.2), cmap="RdYlGn_r", vmin=0, vmax=1.2, aspect="auto")
    for i, j in np.ndindex(share.shape):
        ax.text(j, i, "OOM" if share[i, j] > 1 else f"{share[i, j]:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(gpus)), gpus, rotation=45, ha="right")
    ax.set_yticks(range(len(systems)), systems)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="total / GPU memory")
    fig.tight_layout()
    return fig
