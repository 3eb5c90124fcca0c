# %% [markdown]
# # 00 · Which GPU did I get, and what can it run?
#
# Colab's free tier hands you a **Tesla T4**; at home you may have an 8 GB card. Before loading any text-to-speech model, find out what the GPU is, which number formats it supports and roughly what fits. With no GPU (as in CI), this notebook *simulates* the GPU named in the parameters cell, so every cell still runs and teaches the same thing.

# %% [markdown]
# ## What you will learn
#
# - how to read your GPU's name, compute capability and memory from PyTorch
# - why bfloat16 fails on a T4 (compute capability 7.5) and what to use instead
# - how memory and bandwidth differ across the GPUs people really get
# - a first, weights-only look at which TTS models fit where

# %% tags=["parameters"]
# Parameters: change these, or let papermill set them.
SIMULATE_GPU = "T4"  # used only when no GPU is present; any name from the catalog

# %%
from colab_tts import hardware, plots
from colab_tts.display import Table, save_figure

# %% [markdown]
# ## 1. The device in use
#
# `detect()` asks PyTorch for the GPU. On Colab with a GPU runtime it reports the real card; with none it
# reports the simulated `SIMULATE_GPU` and says so. Expect a compute capability (CC), the memory PyTorch
# sees (less than the number on the box) and the dtype to use.

# %%
report = hardware.detect(simulate=SIMULATE_GPU)
print(report)
gpu = report.gpu

# %% [markdown]
# What it means: the **compute capability** decides the number formats. bfloat16 needs CC ≥ 8.0 (Ampere and
# newer); a T4 is 7.5, so models published in bfloat16 must run in float16 there. The same advice as a
# list, which `python -m colab_tts doctor --gpu T4` also prints in a terminal:

# %%
for line in hardware.recommendations(gpu):
    print("-", line)

# %% [markdown]
# ## 2. The GPUs people get
#
# Every catalog figure names its source (`GpuSpec.source`). Memory is what PyTorch reports, because that
# is what a model can use; bandwidth sets how fast one token can be decoded at batch 1.

# %%
# NBVAL_CHECK_OUTPUT
print(Table(hardware.catalog_rows(), columns=["key", "cc", "memory_gib", "bandwidth_gbs", "fp16_tflops", "bf16", "dtype"]))

# %%
fig = plots.gpu_catalog(highlight=gpu.name)
save_figure(fig, "gpu_catalog");

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
# `resolve_dtype` takes the dtype you ask for and the GPU, and returns what to use with the reason.
# Expect float16 for a bfloat16 request on a T4 and bfloat16 left alone on an L4 (CC 8.9):

# %%
# NBVAL_CHECK_OUTPUT
for request, target in [("bfloat16", "T4"), ("bfloat16", "L4"), ("auto", "T4"), ("auto", "cpu")]:
    choice = hardware.resolve_dtype(request, target)
    print(f"{request:>8} on {target:<3} -> {choice.dtype:<9} {choice.reason}")

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
# Weights alone, in float16, as a share of each GPU's memory. This is the *least* a model needs: activations,
# the KV cache and the framework come on top (notebook 02 plans all of it). Expect Orpheus' 3.3 B parameters
# to take well over a third of a T4 before anything else is loaded.

# %%
# NBVAL_CHECK_OUTPUT
print(Table(hardware.weights_fit_rows("float16", gpus=["T4", "RTX-3070", "RTX-4060", "L4", "A100-40GB"])))

# %%
fig = plots.weights_fit("float16")
save_figure(fig, "weights_fit");

# %% [markdown]
# What it means: every model here fits a T4 *by weights*. MetaVoice-1B still ran out of memory on a T4
# (about 20 GB seen at run time, shared/facts.md): weights are the start of the budget, not the whole of it.

# %% [markdown]
# ## What we measured
#
# - The device report above: on Colab the real GPU, here the simulated one (and the CPU it ran on).
# - The catalog: memory as PyTorch reports it and bandwidth, each with its source; the T4 is the only
#   Colab GPU without bfloat16.
# - `resolve_dtype`: bfloat16 → float16 on a T4, with the reason; strict mode raises instead.
# - Weights-only fit in float16. Next: notebook 01 runs Orpheus on a T4 in float16, notebook 02 sizes
#   the KV cache so it actually starts.
