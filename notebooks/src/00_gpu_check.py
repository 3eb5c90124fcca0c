# %% [markdown]
# # 00 · Which GPU did I get, and what can it run?
#
# Colab's free tier hands you a **Tesla T4**; at home you may have an 8 GB card. Section 1 answers at once: which GPU this is, the number format to use on it, and which of this project's TTS models fit it. *Why* follows: bfloat16 on a T4, the GPUs people get, and a check of every CUDA path. With no GPU (as in CI), this notebook *simulates* the GPU named in the parameters cell, so every cell still runs and teaches the same thing.

# %% [markdown]
# ## What you will learn
#
# - how to read your GPU's name, compute capability and memory from PyTorch
# - why bfloat16 fails on a T4 (compute capability 7.5) and what to use instead
# - how memory and bandwidth differ across the GPUs people really get
# - a first, weights-only look at which TTS models fit where
# - how to check, in under five minutes, that every CUDA path this project uses works on your GPU
#
# Every figure says where it comes from: *measured* (read on this machine now), *cited* (a public source,
# listed under the table) or *predicted* (computed by this package, with what it leaves out).

# %% tags=["parameters"]
# Parameters (a Colab form; papermill sets the same names).
# SIMULATE_GPU: used only when no GPU is present; any name from the catalog.
SIMULATE_GPU = "T4"  # @param {type:"string"}
# RUN_SELFTEST: section 5, every CUDA check (minutes on a GPU; skipped checks only, without one).
RUN_SELFTEST = True  # @param {type:"boolean"}

# %%
from colab_tts import hardware, plots, selftest, systems
from colab_tts.display import Table, save_figure
from colab_tts.lessons import gpu_check

# %% [markdown]
# ## 1. Your GPU and what fits it
#
# `detect()` asks PyTorch for the GPU. On Colab with a GPU runtime it reports the real card and every
# later label, size and plot uses it; only with no GPU does it fall back to the simulated `SIMULATE_GPU`,
# and say so. Expect a compute capability (CC), the memory PyTorch sees (less than the number on the box),
# the dtype to use, and for each TTS model the share of this GPU one 30 s request needs (predicted by
# `plan_vllm`, the same table as notebook 02's section 5, less what other processes already hold on this card:
# a desktop's display and browser take memory vLLM cannot have).

# %%
report = hardware.detect(simulate=SIMULATE_GPU)
print(report)
gpu = report.gpu
print()
print(Table(gpu_check.device_rows(report)))
key, note = gpu_check.catalog_key(report)  # None for a card the catalog lacks or knows with other memory
if key:
    held = hardware.other_gib_now(gpu)  # what a display, a browser or another process already hold (0 offline)
    fit = systems.fit_table(30, "float16", gpus=[key], other_gib=held)
    print(Table(fit, columns=["system", "weights GiB", "KV GiB", "runtime GiB", key], digits=2,
                title=f"share of {gpu.name} one 30 s request needs, float16, with {held:.2f} GiB held by other "
                      "processes (predicted by plan_vllm)"))
else:
    print(note)

# %% [markdown]
# ## Why
#
# What it means: the **compute capability** decides the number formats. bfloat16 needs CC ≥ 8.0 (Ampere and
# newer); a T4 is 7.5, so models published in bfloat16 must run in float16 there. The same advice as a
# list, which `python -m colab_tts doctor --gpu T4` also prints in a terminal:

# %%
for line in hardware.recommendations(gpu):
    print("-", line)

# %% [markdown]
# ## 2. The GPUs people get
#
# Every catalog figure is *cited*: the numbers in brackets point to the sources listed under the table
# (datasheets for bandwidth and TFLOPS, NVIDIA's CUDA GPU list for CC, published logs for the memory
# PyTorch reports). Memory is what PyTorch reports, in GiB, because that is what a model can use;
# bandwidth (GB/s, as datasheets give it) sets how fast one token can be decoded at batch 1.

# %% tags=["nbval-check-output"]
rows, references = gpu_check.catalog_table()
print(Table(rows, columns=["key", "cc", "memory_gib", "bandwidth_gbs", "fp16_tflops", "bf16", "dtype", "sources"]))
for pair in zip(references[::2], references[1::2] + [""]):  # two sources a line: the cell fits a screen
    print("  ".join(pair).rstrip())

# %%
fig = plots.gpu_catalog(highlight=gpu.name)
save_figure(fig, "gpu_catalog");
print("cited: the catalog above; highlighted:", gpu.name, "(simulated)" if report.simulated else "(this machine)")

# %% [markdown]
# What it means: the T4 has about the memory of an RTX 3060 but less bandwidth than any Ampere card in the
# list, and it is the only Colab GPU without bfloat16. Everything later in this project is about working
# inside those two limits.

# %% [markdown]
# ## 3. What bfloat16 does on a T4
#
# Orpheus-TTS and MetaVoice-1B publish bfloat16 weights and load them in bfloat16 by default. On a T4
# that ends in one of these errors (quoted from the libraries; we display them rather than crash):

# %%
for library, (message, source) in hardware.BF16_ERRORS.items():
    print(f"{library}:\n  {message}\n  (source: {source})\n")

# %% [markdown]
# `resolve_dtype` takes the dtype you ask for and the GPU, and returns what to use with the reason. It
# decides on the compute capability alone, never on `torch.cuda.is_bf16_supported()` (which can answer
# True on a T4 by emulating bfloat16). Only `"auto"` chooses for you; an explicit dtype is kept, with a
# warning where there is a known risk. Expect float16 for a bfloat16 request on a T4, bfloat16 left alone
# on an L4 (CC 8.9), and float16 kept on a GTX 1660 Ti with a sourced warning:

# %% tags=["nbval-check-output"]
gtx = hardware.GpuSpec("NVIDIA GeForce GTX 1660 Ti", (7, 5), 5.8, 288, 11)
for request, target in [("bfloat16", "T4"), ("bfloat16", "L4"), ("auto", "T4"), ("auto", "cpu"), ("float16", gtx)]:
    choice = hardware.resolve_dtype(request, target)
    label = target if isinstance(target, str) else "GTX 1660 Ti"
    print(f"{request:>8} on {label:<11} -> {choice.dtype:<9} {choice.reason}")
    for warning in choice.warnings:
        print(f"{'':>24}warning: {warning}")

# %% [markdown]
# With `strict=True` the same request raises a `ValueError` that names the fix — useful in scripts that
# must not silently change precision:

# %%
try:
    hardware.resolve_dtype("bfloat16", "T4", strict=True)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 4. A first look: do the weights fit?
#
# Weights alone, in float16, as a share of each GPU's memory: *predicted* as parameters × 2 bytes, a lower
# bound, since activations, the KV cache and the framework come on top (notebook 02 plans all of it).
# Expect Orpheus' 3.3 B parameters to take well over a third of a T4 before anything else is loaded.

# %% tags=["nbval-check-output"]
print(Table(hardware.weights_fit_rows("float16", gpus=["T4", "RTX-3070", "RTX-4060", "L4", "A100-40GB"])))

# %%
fig = plots.weights_fit("float16")
save_figure(fig, "weights_fit");

# %% [markdown]
# What it means: every model here fits a T4 *by weights*. MetaVoice-1B was still seen using about 20 GB on
# an RTX 4090 (cited: https://github.com/metavoiceio/metavoice-src/issues/30, 2024-02-09, before its memory
# fix): weights are the start of the budget, not the whole of it.

# %% [markdown]
# ## 5. Self-test: every CUDA path in under five minutes
#
# `python -m colab_tts selftest` (the same as this cell) runs each CUDA path this project relies on once:
# the bfloat16 refusal below CC 8.0, float16 Orpheus (the tiny offline model) through CUDA vLLM and
# through transformers, SNAC on CUDA against the CPU, `track_peak` against a known allocation (`64` MiB), the
# offload hooks moving a module and freeing its memory, static-cache decoding with CUDA graphs against
# eager (same greedy tokens), and an allocator capped at 8 GiB to behave like an 8 GB card. Expect PASS
# rows on a GPU; with no GPU only the bfloat16 check runs and each CUDA check is listed as skipped.

# %%
if RUN_SELFTEST:
    selftest.main()

# %% [markdown]
# What it means: every row is *measured* on this machine, timings included. A FAIL names the path that
# breaks on your GPU before a notebook depends on it. The Orpheus rows use random weights, so they show
# that the path runs in float16 on the GPU, not that the speech is good.

# %% [markdown]
# ## What we measured
#
# - The device report above: on Colab the real GPU (measured), here the simulated one (cited) and the CPU
#   it ran on.
# - The catalog: memory as PyTorch reports it (GiB) and bandwidth, each with its source; the T4 is the only
#   Colab GPU without bfloat16.
# - `resolve_dtype`: bfloat16 → float16 on a T4, with the reason; strict mode raises instead; an explicit
#   float16 on a GTX 16xx is kept, with the risk as a sourced warning.
# - Weights-only fit in float16 (predicted, a lower bound). Next: notebook 01 runs Orpheus on a T4 in
#   float16, notebook 02 sizes the KV cache so it actually starts.
# - The self-test: each CUDA path passed, failed or was skipped on this machine, with its time.
