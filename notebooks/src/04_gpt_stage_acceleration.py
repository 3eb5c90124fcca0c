# %% [markdown]
# # 04 · Accelerating the GPT stage: GPT-SoVITS text-to-semantic decoding, measured
#
# GPT-SoVITS spends most of its time in its autoregressive **GPT stage**: a 24-layer transformer that turns phonemes (plus BERT features) into semantic tokens, one token per step. People ask how to make it faster: KV caches, `torch.compile` / CUDA graphs, batching, lower precision, TensorRT, sampling settings, early stopping. Here each technique is measured on the real architecture, one section at a time, in a table that grows as we go, and every figure says what it is: *measured* (this run, on which device), *predicted* (the roofline) or *cited* (with its source).
#
# Two ways to run this notebook, and what each gives:
#
# - **Offline (here, in CI, on a CPU runtime):** the real-size GPT-SoVITS v2 architecture with **random weights, fed random phonemes**. Its tokens are noise: they say nothing about quality or voice. The mechanics and the timings are real; the timed sections run on the CPU at a reduced width (the parameters cell), the roofline and the kernel count use the real size, the overhead floor the real depth (24 layers).
# - **On a Colab GPU:** the same lessons on CUDA at the real size (with a real checkpoint if you give one), **plus the real deployment** (section 14): upstream GPT-SoVITS v2 with its own weights makes speech from a reference clip, first with its defaults, then with its own speed switches, and our decoder decodes the same inputs from the same checkpoint, side by side.

# %% [markdown]
# ## What you will learn
#
# - what the GPT stage computes and what real time needs (25 semantic tokens per second of audio)
# - the upstream decode loop (a KV cache grown by `torch.cat`) measured as the baseline
# - what a static cache, no cache, lower precision, int8 and torch.compile each change, and which of those effects carry over to a GPU
# - why a batch-1 step on a T4 is bound by kernel launches and Python, not by memory bandwidth (with numbers), and so why CUDA graphs and batching are the levers
# - what sampling costs on the decode device, how early stopping saves work, how a long text decodes in length buckets
# - GPT-SoVITS's own `batch_size`, `split_bucket` and `parallel_infer`, and where TensorRT stands
# - on a GPU: real GPT-SoVITS v2 run through upstream's own pipeline in an environment of its own, against our decoder on the same inputs

# %% tags=["parameters"]
# Parameters (a Colab form; papermill sets the same names).
# SIZE: "real" (24 layers, hidden 512) on a GPU; "small" (4 layers, hidden 128) on a CPU, as in CI
SIZE = "auto"  # @param {type:"string"}
# TOKENS: tokens decoded per measurement
TOKENS = 48  # @param {type:"integer"}
# SEGMENT_PHONEMES: a long text split into 8 segments (phonemes each)
SEGMENT_PHONEMES = [6, 30, 14, 40, 4, 22, 34, 10]  # @param {type:"raw"}
# TOKENS_PER_PHONEME: random weights never stop: each segment gets the tokens a real voice would take
TOKENS_PER_PHONEME = 2  # @param {type:"integer"}
# BATCH_SIZE: segments per bucket
BATCH_SIZE = 8  # @param {type:"integer"}
# CPU_THREADS: on a shared 2-core machine more threads spin against each other
CPU_THREADS = 1  # @param {type:"integer"}
# CHECKPOINT: path to a GPT-SoVITS s1 .ckpt (GPT_weights_v2/...); empty: random weights
CHECKPOINT = ""  # @param {type:"string"}
# TRY_COMPILE: "auto": torch.compile only on a GPU (on a CPU the warm-up costs minutes)
TRY_COMPILE = "auto"  # @param {type:"string"}
# SIMULATE_GPU: section 7's budget is for the detected GPU; with none, for this catalog GPU
SIMULATE_GPU = "T4"  # @param {type:"string"}
# DEPLOY: section 14, real GPT-SoVITS: "auto" = on a CUDA runtime only; False = never
DEPLOY = "auto"  # @param {type:"string"}
# DEPLOY_DIR: its environment, upstream clone, weights and audio (weights on Drive if mounted)
DEPLOY_DIR = "colab_tts_deploy"  # @param {type:"string"}
DEPLOY_TEXT = ("A long text is split into segments. Each segment becomes phonemes. The GPT stage turns them "
               "into semantic tokens, one at a time. Upstream decodes the segments one after another. With a "
               "batch, they share each step. Sorting by length keeps the padding small. Finished rows leave the "
               "batch early. The tokens stay the same. Only the time changes. Listen, and compare the clips.")
# %%
import copy

import torch

from colab_tts import devices, hardware
from colab_tts.cited import cited
from colab_tts.decoding import FIXED_LENGTH, generate
from colab_tts.display import Table, save_figure
from colab_tts.lessons import gpt_stage
from colab_tts.lessons.gpt_stage import speed_row, time_decode
from colab_tts.precision import prepare_model
from colab_tts.t2s import T2SConfig, T2SModel, load_gpt_sovits_checkpoint
from colab_tts.t2s_runner import T2SRunner, decode_segments, random_prompt, random_segments

device = devices.accelerator().type
GPU = hardware.detect(simulate=SIMULATE_GPU).gpu  # the detected GPU, else the simulated one
if device == "cpu":
    torch.set_num_threads(CPU_THREADS)
real = SIZE == "real" or (SIZE == "auto" and device == "cuda") or bool(CHECKPOINT)
torch.manual_seed(0)
if CHECKPOINT:
    model = load_gpt_sovits_checkpoint(CHECKPOINT)
else:
    model = T2SModel(T2SConfig() if real else T2SConfig.small(n_layer=4, hidden_dim=128, n_head=4)).eval()
fp32, _ = prepare_model(model, "float32", device)
config = fp32.config
print(f"device {device}; {'real size' if real else 'scaled down'}; "
      f"{fp32.decode_param_count() / 1e6:.1f} M parameters read per token; "
      f"{'checkpoint weights' if CHECKPOINT else 'random weights'}")
COLUMNS = ["technique", "tokens/s", "speed-up", "RTF", "kind", "on a GPU"]

# %% [markdown]
# ## 0. The fast decoder in one call
#
# For a long text, `decode_segments` sorts the segments by length, decodes neighbours together in buckets of
# `BATCH_SIZE` with a static KV cache, and lets finished rows leave the batch: the fastest path this notebook
# measures. Expect the whole text's tokens and the time, *measured* on this device (random weights offline:
# the tokens mean nothing, the timing is real). Sections 1 to 13 are the *why*, technique by technique.

# %%
rng = torch.random.get_rng_state()  # the sections below draw the same random inputs as without this cell
text_segments, text_prompt = random_segments(config, SEGMENT_PHONEMES), random_prompt(config, 50)
fast = decode_segments(fp32, text_segments, text_prompt, FIXED_LENGTH, "static", BATCH_SIZE,
                       [TOKENS_PER_PHONEME * n for n in SEGMENT_PHONEMES])
torch.random.set_rng_state(rng)
print(f"measured on {device}: {fast.n_tokens} semantic tokens for {len(text_segments)} segments in {fast.seconds:.2f} s "
      f"({fast.tokens_per_s:.0f} tokens/s, {fast.tokens_per_s / fast.audio_rate:.1f}x real time)")

# %% [markdown]
# ## 1. What the GPT stage is, and what real time needs
#
# The model reads the text side (phoneme embeddings plus a projection of BERT features) and a prompt of
# semantic tokens from the reference audio, then predicts semantic tokens one at a time until it emits EOS
# (token 1024). Semantic tokens run at **25 per second of audio**, so *real time* means decoding at least
# 25 tokens/s and the **real-time factor** (RTF = compute time / audio time) must stay below 1. The real
# GPT-SoVITS v2 sizes (`T2SConfig()`, from upstream's `s1longer-v2.yaml`) and the decode limits, each with its source:

# %% tags=["nbval-check-output"]
print(Table([T2SConfig().as_dict()]))
print(Table([{"figure": c.key, "value": c.value, "unit": c.unit, "source": c.label()} for c in map(cited, [
    "gpt_sovits.semantic_tokens_per_second", "gpt_sovits.max_decode_steps", "gpt_sovits.eos_blocked_steps",
    "gpt_sovits.top_k", "gpt_sovits.repetition_penalty"])]))

# %% [markdown]
# ## 2. The baseline: the upstream way
#
# Upstream decodes one segment at a time: a prefill over the prompt, then one `decode_step` per token with
# a KV cache that grows by `torch.cat` every step (a new, one-position-longer tensor per layer per token), in
# float32. We time the decode loop alone for `TOKENS` tokens on one segment. Expect far under real time on a
# CPU at the real size; upstream users report 80–300 steps/s on fast GPUs (section 7).

# %%
segments = random_segments(config, SEGMENT_PHONEMES)
prompt = random_prompt(config, 50)
one = [segments[3]]
baseline = time_decode(fp32, one, prompt, "concat", TOKENS)
results = [speed_row("upstream: concat cache, float32", baseline, baseline, device=device)]
Table(results, columns=COLUMNS)

# %% [markdown]
# What it means: the first row is the reference for every speed-up below. RTF above 1 means the GPT stage
# alone is slower than the audio it produces.
#
# ## 3. A static cache
#
# `StaticCache` allocates K/V for the whole sequence once and writes each step in place: no new tensors per
# step. Expect the same tokens (the same arithmetic) and, at batch 1, about the same speed. What the static
# cache buys is elsewhere: fixed shapes for torch.compile / CUDA graphs (section 6), and batches whose
# finished rows are compacted in place (sections 9 and 10).

# %%
static = time_decode(fp32, one, prompt, "static", TOKENS)
results.append(speed_row("static cache, float32", static, baseline, device=device))
print("greedy tokens identical to the baseline:", static.tokens == baseline.tokens)
Table(results, columns=COLUMNS)

# %% [markdown]
# ## 4. No cache at all
#
# Without a cache every step recomputes the whole sequence (prompt + everything generated so far): the
# work per token grows with the length. This is what a KV cache saves; we run a quarter of the tokens.

# %%
recompute = time_decode(fp32, one, prompt, "none", max(4, TOKENS // 4))
results.append(speed_row("no cache (recompute)", recompute, baseline, device=device))
print("greedy tokens identical to the baseline:", recompute.tokens[0] == baseline.tokens[0][: len(recompute.tokens[0])])
Table(results, columns=COLUMNS)

# %% [markdown]
# What it means: recomputing is several times slower already at this length, on any device, and gets worse
# as the sequence grows (upstream allows up to 1,500 tokens).
#
# ## 5. Lower precision: what transfers to a GPU and what does not
#
# `prepare_model` chooses the dtype on the GPU's compute capability (`hardware.resolve_dtype`): float16 on a
# T4 (CC 7.5 has no bfloat16; `torch.cuda.is_bf16_supported()` says True there only because PyTorch emulates
# it), bfloat16 from Ampere on. On a GPU, fp16 halves the bytes each token reads. **On a CPU the result says
# nothing about a GPU**: half precision is fast only with AVX512-BF16/AMX instructions, and PyTorch's dynamic
# int8 (Linear layers quantized on the fly) exists only on the CPU. On a CPU we therefore measure them and
# label them "on this CPU"; the last column gives the GPU expectation. Tokens may drift (with random weights
# that is a sign of numerical sensitivity, not a quality measurement).

# %%
if device == "cpu":
    print(gpt_stage.cpu_low_precision())
variants = ["auto"] if device == "cuda" else ["bfloat16", "float16", "int8"]
lowp = {}
for dtype in variants:
    lowp[dtype], reason = prepare_model(copy.deepcopy(fp32), dtype, device)
    g = time_decode(lowp[dtype], one, prompt, "static", TOKENS)
    same = sum(a == b for a, b in zip(g.tokens[0], baseline.tokens[0]))
    label = "int8" if dtype == "int8" else str(lowp[dtype].dtype).removeprefix("torch.")
    where = " (on this CPU)" if device == "cpu" else ""
    results.append(speed_row(f"static cache, {label}{where}", g, baseline, device=device))
    print(f"{dtype}: {reason}; {same}/{TOKENS} greedy tokens as in float32")
Table(results, columns=COLUMNS)

# %% [markdown]
# What it means: read the precision rows with their `kind` and `on a GPU` columns. A half-precision row
# slower than float32 here is a CPU that converts instead of computing natively — not what a T4 does. On a
# T4 the honest expectation comes from section 7: at batch 1 in eager PyTorch the step is bound by launches,
# so fp16 changes little until CUDA graphs or batching remove that bound; then it halves the time the
# weights take to read.
#
# ## 6. torch.compile (CUDA graphs on a GPU)
#
# `torch.compile(mode="reduce-overhead")` on a **fixed-shape** static cache (`colab_tts.compiled`) captures
# the whole step as a CUDA graph and replays it with one launch. GPT-SoVITS added the same by hand in 2026
# (its commit message: "speed doubles"). The first calls compile (tens of seconds to minutes); only later
# ones are fast. On a CPU there are no launches to save and the warm-up costs minutes, so
# `TRY_COMPILE="auto"` skips it there.

# %%
import time

from colab_tts.compiled import compiled_step

print(cited("gpt_sovits.cuda_graph_commit"))
if TRY_COMPILE is True or (TRY_COMPILE == "auto" and device == "cuda"):
    step = compiled_step(fp32)
    t0 = time.perf_counter()
    time_decode(fp32, one, prompt, "static", TOKENS, warmup=0, fixed_shape=True, step_fn=step)
    warm = time.perf_counter() - t0
    compiled = time_decode(fp32, one, prompt, "static", TOKENS, warmup=0, fixed_shape=True, step_fn=step)
    results.append(speed_row("static + torch.compile, float32", compiled, baseline, device=device))
    print(f"first run, compile included: {warm:.0f} s; same tokens: {compiled.tokens == baseline.tokens}")
else:
    print("torch.compile skipped on", device, "(set TRY_COMPILE = True to measure its warm-up and speed here)")
Table(results, columns=COLUMNS)

# %% [markdown]
# ## 7. Bandwidth or launches? Where a batch-1 step's time goes on a T4
#
# Every decoded token reads all weights once (plus the K/V cache), so tokens/s ≤ bandwidth / bytes per
# token: the **roofline**, a prediction from the datasheet bandwidth. For the real GPT stage in float16
# with 500 cached positions:

# %% tags=["nbval-check-output"]
Table(gpt_stage.roofline_rows(["T4", "RTX-3070", "RTX-4060", "L4"], "float16"), digits=2)

# %% [markdown]
# About half a millisecond per token on a T4: over 1,500 tokens/s, 70× real time. But an eager step is
# not one read of the weights: it is a few hundred small kernels, each launched from Python. We count the
# operators one real-size step dispatches (views, which launch nothing, apart), and time the same 24 layers
# with tiny tensors — the same operators with no arithmetic left: the floor under every eager step,
# whatever the weights' size. Then published GPU measurements of upstream's eager loop:

# %%
kernels = gpt_stage.step_kernel_count()
overhead = gpt_stage.host_overhead_per_step(device=device)
print(f"one real-size decode step: {kernels['kernels']} kernel-launching operators, {kernels['views']} views "
      f"(counted on {device})")
Table(gpt_stage.step_budget_rows(GPU, overhead, kernels["kernels"], device=device))

# %%
print(gpt_stage.overhead_verdict(overhead, GPU, device=device))

# %% [markdown]
# What it means: the bandwidth time (about 0.5 ms on a T4) is a small part of an eager batch-1 step. The
# rest is per-operator cost — Python, PyTorch's dispatcher and the launch itself (microseconds each, a few
# hundred times per token). The cited measurements show it: upstream's eager loop runs at 1.4–3.4% of an RTX
# 4090's bandwidth ceiling, and the same GPU goes from 80 to 195 steps/s by changing only the host CPU. So:
#
# - **CUDA graphs** (one launch per step; section 6, upstream's "speed doubles") attack the real bound;
# - **batching** makes every launch and every weight read serve B rows (sections 9 and 10);
# - **fp16** halves a cost that is not yet the bound at batch 1 eager; it pays once the two above are done.
#
# ## 8. Sampling settings and their cost, on the decode device
#
# Upstream samples with repetition penalty 1.35 → top-p → temperature → top-k 15. `sample` does the same in
# one function with no host sync (an exponential race instead of `torch.multinomial`). We time it on the
# device that decodes (synchronised), against a decode step measured on the same device:

# %%
from colab_tts.decoding import GREEDY, Sampling

settings = {"greedy": GREEDY, "upstream default (top-k 15, penalty 1.35)": Sampling(),
            "top-p 0.8": Sampling(top_p=0.8), "temperature 0.7, top-k 5": Sampling(temperature=0.7, top_k=5)}
sampling_rows = gpt_stage.time_sampling(settings, config.vocab_size, device=device)
step_us = 1e6 / results[1]["tokens/s"]
for r in sampling_rows:
    r["share of a decode step"] = f"{r['us per token'] / step_us:.1%} (both on {device})"
Table(sampling_rows)

# %% [markdown]
# What it means: top-p sorts the vocabulary and costs the most; next to a decode step it is small, so pick
# sampling settings for quality, not speed. On a GPU each sampling operator is one more launch (section 7):
# there the share is larger than its arithmetic suggests, and a captured step with sampling inside the
# graph removes it.
#
# ## 9. Early stopping: EOS, caps, and finished rows leaving the batch
#
# A row stops at EOS (blocked for the first 11 steps upstream) or at its cap
# (`max_new_tokens`, upstream 1,500). In a batch, a finished row would otherwise keep costing work until the
# longest row ends; `generate` drops it from the batch (cache rows included), as upstream's batched decode
# does. Counting the row-steps for our 8 segments decoded as one batch, each to its own length:

# %% tags=["nbval-check-output"]
caps = [TOKENS_PER_PHONEME * n for n in SEGMENT_PHONEMES]
runner = T2SRunner(fp32, segments, prompt, "static", max_new_tokens=max(caps))
batch = generate(runner, FIXED_LENGTH, config.eos_id, caps)
print("tokens per segment:", [len(t) for t in batch.tokens])
print(f"row-steps with finished rows dropped: {batch.row_steps}; if every row ran to the end: "
      f"{batch.steps * len(caps)} ({1 - batch.row_steps / (batch.steps * len(caps)):.0%} saved)")

# %% [markdown]
# ## 10. A long text: segments decoded in length buckets
#
# A long text is split into segments (by punctuation; here we take their phoneme counts as given). The
# upstream way decodes them one after another. Instead, sort them by length, put neighbours into buckets of
# `BATCH_SIZE`, left-pad each bucket and decode it as one batch with a static cache: every launch and every
# weight read now serves several rows, and similar lengths keep padding and idle rows small. Expect
# identical tokens in float32 and a speed-up that grows with the batch:

# %%
upstream = decode_segments(fp32, segments, prompt, FIXED_LENGTH, "concat", batch_size=1, max_new_tokens=caps)
long_rows = [speed_row("upstream: 1 at a time, concat, float32", upstream, upstream, False, device)]
bucketed = decode_segments(fp32, segments, prompt, FIXED_LENGTH, "static", BATCH_SIZE, caps, progress=True)
long_rows.append(speed_row(f"buckets of {BATCH_SIZE}, static, float32", bucketed, upstream, False, device))
for dtype, m in lowp.items():
    g = decode_segments(m, segments, prompt, FIXED_LENGTH, "static", BATCH_SIZE, caps)
    label = "int8" if dtype == "int8" else str(m.dtype).removeprefix("torch.")
    where = " (on this CPU)" if device == "cpu" else ""
    long_rows.append(speed_row(f"buckets of {BATCH_SIZE}, static, {label}{where}", g, upstream, False, device))
print("float32 tokens identical to the upstream way:", bucketed.tokens == upstream.tokens)
Table(long_rows, columns=COLUMNS)

# %% [markdown]
# What it means: the speed-up column is the whole long text, prefill included, against the upstream way on
# the same machine in the same run. The float32 bucket row is the mechanism that carries over to a GPU,
# where a launch-bound step costs about the same for 1 row or 8. At the scaled-down size used in CI,
# per-step overhead weighs more than at the real size; `benchmarks/gpt_stage.py` runs the same comparison at
# the real size (24 layers, hidden 512).
#
# ## 11. GPT-SoVITS's own options: what you can set today
#
# GPT-SoVITS's `TTS.run()` (the API behind `api_v2.py` and the WebUI's fast path) already has the two levers
# measured above. What each option does, with the code it runs, and what it corresponds to here:

# %% tags=["nbval-check-output"]
Table(gpt_stage.gpt_sovits_options_rows())

# %% [markdown]
# What it means: with the default `batch_size=1`, `parallel_infer=True` has nothing to batch — every segment
# is still decoded alone. For a long text, pass `batch_size` of 4–8 with `split_bucket=True` and
# `parallel_infer=True` (no streaming, `speed_factor=1`): that is section 10's bucketed, row-dropping decode.
# Upstream's CUDA-graph path is separate: it lives in `inference_webui.py`, not in `TTS.run()`.
#
# ## 12. TensorRT: where it stands
#
# TensorRT needs static graphs: the GPT split into a prefill graph and a fixed-shape step graph with a
# preallocated KV cache (what our `StaticCache(fixed_shape=True)` is), exported to ONNX, and an engine built
# on the target machine (rebuilt whenever CUDA or TensorRT change). What upstream says and what people report:

# %% tags=["nbval-check-output"]
Table(gpt_stage.tensorrt_rows())

# %% [markdown]
# What it means: upstream will not ship one; a community refactor reports TensorRT at about 2× its own
# PyTorch path on a Turing card (the T4's architecture), at more memory — about what CUDA graphs give inside
# PyTorch (section 6), without an export step or a per-machine engine build. At 292 tokens/s it is still
# far under the roofline of section 7: a per-token host round trip remains.
#
# ## 13. Summary

# %%
fig = gpt_stage.speedup_bars({"batch 1: speed-up over the upstream loop": results,
                              "long text: speed-up over the upstream way": long_rows})
save_figure(fig, "gpt_stage_speedups");

# %%
for line in gpt_stage.headline(results, long_rows, device):
    print(line)

# %% [markdown]
# ## 14. On a GPU: real GPT-SoVITS v2, upstream's pipeline against our decoder
#
# Everything above ran our reimplementation of the GPT stage. Here the real system runs. GPT-SoVITS pins
# **Python 3.10, numpy < 2 and transformers < 5** (RVC-Boss/GPT-SoVITS `requirements.txt` and
# `Colab-Inference.ipynb` @48b1a01), which Colab's kernel (Python 3.13, numpy 2, transformers 5) cannot
# host. So the runner (`python -m
# colab_tts.deploy gpt-sovits`, or `colab_tts.deploy.deploy(...)` from here) builds an environment of its
# own: a `uv` venv with Python 3.10, upstream cloned and checked out at the pinned commit, torch for CUDA 12.8
# and upstream's requirements, then the v2 weights from the public `lj1995/GPT-SoVITS` hub repository
# (the GPT and SoVITS checkpoints, BERT and HuBERT: file count and size in GiB printed before the download,
# with progress bars). With Google Drive mounted the weights are cached on Drive and downloaded once; every
# install step runs once, so re-running after a disconnect skips what is done. **This kernel never imports
# upstream code**: the runner runs upstream's `TTS_Config` / `TTS` / `TTS.run` in that environment, times
# the GPT stage inside `TTS.run`, keeps the greedy run's T2S inputs (phonemes, BERT features, prompt
# semantics from upstream's own front end), decodes them again with our loader and decode loop, and hands
# back a JSON result and wav files. The plan it follows, printed without running anything (the same JSON as
# `python -m colab_tts.deploy gpt-sovits --dry-run`):

# %% tags=["nbval-check-output"]
from colab_tts.deploy import deploy, plan
from colab_tts.lessons import gpt_stage_deploy

gsv_plan = plan("gpt-sovits", {"text": DEPLOY_TEXT})
print("\n".join(gpt_stage_deploy.deploy_plan_summary(gsv_plan)))
print(Table(gpt_stage_deploy.deploy_plan_rows(gsv_plan)))

# %% [markdown]
# Four `TTS.run` calls on the same text (`DEPLOY_TEXT`) and reference clip: upstream's defaults;
# `parallel_infer=False` (each batch's rows decoded one after another); `batch_size=8` with `split_bucket=True`
# (section 11's levers); and a greedy run (`top_k=1`) whose inputs our decoder gets. Upstream's default
# splitter (`cut1`) groups four punctuation-separated pieces into a segment, so the text makes a few segments:
# with the default `batch_size=1` each is decoded alone, with `batch_size=8` together. Expect, on a T4: the
# batched run ahead of the defaults in GPT-stage tokens/s (section 10's mechanism, in upstream's code); our
# greedy tokens identical to upstream's on every segment, since our decoder loads the same checkpoint and gets
# the same inputs: the runner keeps the inputs of each decode call of the greedy run (one per segment at
# `batch_size=1`) and compares the tokens segment by segment (the "segments identical" column). Our eager
# paths decode those few segments, so expect them near upstream's eager loop, not the bucket speed-up of
# section 10. Two more rows put CUDA graphs side by side on the same segments: upstream's own
# `CUDAGraphRunner` (RVC-Boss/GPT-SoVITS `GPT_SoVITS/AR/models/t2s_model_cudagraph.py` @48b1a01, called as
# its `inference_webui.py` does, one segment per request) and ours (section 6's compiled step, buckets of 8);
# each decodes twice and the second pass is timed (the first captures or compiles). Upstream's decode step
# there attends over its whole preallocated KV cache with no mask (`Attention.forward`), unwritten zero
# slots included, and it blocks EOS on its first step only (the naive loop blocks it for 11); offline, with
# upstream's modules and small random weights (`tests/test_gpt_sovits_upstream.py`), that path's greedy tokens
# leave its naive path's on every segment and agree once cut to the written slots.
# Trained weights may dilute less, so how many segments still agree on the GPU is what its row measures; a
# row that disagrees is a faster path that decodes something else, not a faster same result. The first
# call installs and downloads (minutes); the measurements themselves take seconds (plus the compile).

# %%
from IPython.display import display

run_deploy, why = gpt_stage_deploy.should_deploy(DEPLOY, device)
if run_deploy:
    result = deploy("gpt-sovits", {"text": DEPLOY_TEXT}, workdir=DEPLOY_DIR)
    print(gpt_stage_deploy.greedy_verdict(result))
    display(Table(gpt_stage_deploy.deploy_speed_rows(result)), gpt_stage_deploy.Players(result))
else:
    print(why)

# %% [markdown]
# What the numbers mean: every row is measured in the one run on the GPU the `kind` column names.
# *GPT-stage tokens/s* times upstream's decode call (`infer_panel_*`) inside `TTS.run`, and our decode of the
# same inputs; *GPT-stage RTF* is 25 semantic tokens per second of audio divided by it (below 1 is faster
# than real time). *Whole-run RTF* is all of `TTS.run` (text front end, BERT, GPT stage, SoVITS) over the
# audio it made: what a user waits for. The upstream rows sample (`top_k=15`) except the greedy one, so their
# token counts differ; compare rates, not counts. The first `TTS.run` also pays one-time CUDA warm-up, so
# read its row as an upper bound. Identical greedy tokens mean our decoder is a drop-in for upstream's on this
# checkpoint and these inputs (every segment of the greedy run): upstream's SoVITS stage turns our tokens
# into exactly the greedy clip below, so the only difference is the time it took. A mismatch in float16 would
# show where half-precision rounding flips a near-tie, which random weights (sections 3-10) cannot show.
# Unlike every clip this notebook could make offline, these are real speech.

# %% [markdown]
# ## What we measured
#
# - The upstream decode loop (concat cache, float32) as the baseline, in tokens/s and real-time factor,
#   measured in this run on the device named in each row.
# - A static cache: the same tokens and, at batch 1, about the upstream loop's speed; what it buys is fixed
#   shapes (CUDA graphs) and in-place compaction of finished rows. No cache: much slower, and worse with length.
# - Lower precision, chosen on compute capability (float16 on a T4, bfloat16 from Ampere on). On a CPU,
#   bf16 / fp16 / dynamic int8 are measured and labelled "on this CPU": dynamic int8 does not exist on a T4,
#   and a CPU's half-precision speed says nothing about a GPU's.
# - Where a batch-1 step's time goes: the T4 roofline (predicted, about 0.5 ms per token) against the per-step
#   overhead of a few hundred kernel launches (counted and measured here; cited GPU runs at 1.4–3.4% of
#   their bandwidth ceiling): launch-bound, which is why CUDA graphs (upstream: "speed doubles") and batching pay.
# - Sampling timed on the decode device: small next to a decode step; dropping finished rows saves the
#   row-steps counted in section 9.
# - A long text in length buckets: identical float32 tokens and the speed-up printed above — the path that
#   transfers to a GPU, and what GPT-SoVITS's own `batch_size` + `split_bucket` + `parallel_infer` give.
# - TensorRT: not planned upstream; a community export reports about 2× on a Turing card (cited).
#
# **Offline vs on a GPU.** Offline (CPU, CI) every measurement above used the real architecture (scaled down
# in width for the timed sections) with random weights and random phonemes: timings and token identity are
# real, the tokens themselves are noise, and the
# CPU-only effects are labelled "on this CPU". On a Colab GPU the same sections are measured on CUDA at the
# real size, and section 14 adds the real deployment: upstream GPT-SoVITS v2 with its weights, its defaults
# against its own `parallel_infer` / `batch_size` / `split_bucket`, our decoder on every segment of the same
# greedy inputs, and upstream's CUDA-graph decoder beside ours (GPT-stage tokens/s, RTF, identical tokens,
# real speech), all measured in that run on that GPU. Offline,
# section 14 prints its plan and says in one line that it skipped the run.
