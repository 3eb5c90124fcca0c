# %% [markdown]
# # 04 · Accelerating the GPT stage: GPT-SoVITS text-to-semantic decoding, measured
#
# GPT-SoVITS spends most of its time in its autoregressive **GPT stage**: a 24-layer transformer that turns phonemes (plus BERT features) into semantic tokens, one token per step. People ask how to make it faster: KV caches, `torch.compile`, batching, lower precision, sampling settings, early stopping. Here each technique is measured on the real architecture, one section at a time, in a table that grows as we go. Offline (as in CI) the weights are random and the model is scaled down by the parameters cell: the tokens are meaningless, but the mechanics and the timings are real. On Colab with a GPU it runs the real size (and loads a real checkpoint if you give one).

# %% [markdown]
# ## What you will learn
#
# - what the GPT stage computes and what real time needs (25 semantic tokens per second of audio)
# - the upstream decode loop (a KV cache grown by torch.cat) measured as the baseline
# - what a static cache, no cache, lower precision, int8 and torch.compile each change, measured
# - why batch-1 decoding is far below the GPU's bandwidth ceiling, and what that means for CUDA graphs
# - what sampling costs, how early stopping saves work, and how a long text decodes in length buckets

# %% tags=["parameters"]
# Parameters: change these, or let papermill set them.
SIZE = "auto"            # "real" (24 layers, hidden 512) on a GPU; "small" (4 layers, hidden 128) on a CPU, as in CI
TOKENS = 48              # tokens decoded per measurement
SEGMENT_PHONEMES = [6, 30, 14, 40, 4, 22, 34, 10]   # a long text split into 8 segments (phonemes each)
TOKENS_PER_PHONEME = 2   # random weights never stop: each segment gets the tokens a real voice would take
BATCH_SIZE = 8           # segments per bucket
CPU_THREADS = 1          # on a shared 2-core machine more threads spin against each other
CHECKPOINT = ""          # path to a GPT-SoVITS s1 .ckpt (GPT_weights_v2/...); empty: random weights
TRY_COMPILE = "auto"     # "auto": torch.compile only on a GPU (on a CPU the warm-up costs minutes)

# %%
import copy

import torch

from colab_tts import decoding, hardware
from colab_tts.decoding import FIXED_LENGTH, decode_segments, prepare_model, speed_row, time_decode
from colab_tts.display import Table, save_figure
from colab_tts.t2s import T2SConfig, T2SModel, load_gpt_sovits_checkpoint

device = "cuda" if torch.cuda.is_available() else "cpu"
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
      f"{fp32.decode_param_count() / 1e6:.1f} M parameters read per token")

# %% [markdown]
# ## 1. What the GPT stage is, and what real time needs
#
# The model reads the text side (phoneme embeddings plus a projection of BERT features) and a prompt of
# semantic tokens from the reference audio, then predicts semantic tokens one at a time until it emits EOS
# (token 1024). Semantic tokens run at **25 per second of audio** (shared/facts.md), so *real time* means
# decoding at least 25 tokens/s, and the **real-time factor** (RTF = compute time / audio time) must stay
# below 1. The real GPT-SoVITS v2 sizes, from `T2SConfig()`:

# %%
# NBVAL_CHECK_OUTPUT
print(Table([{k: v for k, v in T2SConfig().as_dict().items()}]))

# %% [markdown]
# ## 2. The baseline: the upstream way
#
# Upstream decodes one segment at a time: a prefill over the prompt, then one `decode_step` per token with
# a KV cache that grows by `torch.cat` every step (a new, one-position-longer tensor per layer per token), in
# float32. We time the decode loop alone for `TOKENS` tokens on one segment; expect well under real time on
# a CPU at the real size and something in the hundreds of tokens/s on a GPU.

# %%
segments = decoding.random_segments(config, SEGMENT_PHONEMES)
prompt = decoding.random_prompt(config, 50)
one = [segments[3]]
baseline = time_decode(fp32, one, prompt, "concat", TOKENS)
results = [speed_row("upstream: concat cache, float32", baseline, baseline)]
Table(results)

# %% [markdown]
# What it means: the first row is the reference for every speed-up below. RTF above 1 means the GPT stage
# alone is slower than the audio it produces.
#
# ## 3. A static cache
#
# `StaticCache` allocates K/V for the whole sequence once and writes each step in place: no new tensors per
# step. Expect the same tokens (it is the same arithmetic) and, at batch 1, about the same speed: the copy
# `torch.cat` makes grows with the sequence, but reading the weights dominates each step. What the static
# cache buys is elsewhere: fixed shapes for torch.compile / CUDA graphs (section 6), and batches whose
# finished rows are compacted in place (sections 9 and 10).

# %%
static = time_decode(fp32, one, prompt, "static", TOKENS)
results.append(speed_row("static cache, float32", static, baseline))
print("greedy tokens identical to the baseline:", static.tokens == baseline.tokens)
Table(results)

# %% [markdown]
# ## 4. No cache at all
#
# Without a cache every step recomputes the whole sequence (prompt + everything generated so far): the
# work per token grows with the length. This is what a KV cache saves; we run a quarter of the tokens.

# %%
recompute = time_decode(fp32, one, prompt, "none", max(4, TOKENS // 4))
results.append(speed_row("no cache (recompute)", recompute, baseline))
print("greedy tokens identical to the baseline:", recompute.tokens[0] == baseline.tokens[0][: len(recompute.tokens[0])])
Table(results)

# %% [markdown]
# What it means: recomputing is several times slower already at this length, and gets worse as the
# sequence grows (upstream allows up to 1,500 tokens).
#
# ## 5. Lower precision: fp16 / bf16, and int8 on a CPU
#
# `prepare_model` goes through `hardware.resolve_dtype`: on a T4 (no bfloat16) it picks float16, on Ampere
# and newer bfloat16. On a CPU, half precision only helps where the CPU has bf16 instructions (AVX512-BF16 /
# AMX) and mainly once several rows share each weight read; PyTorch's *dynamic int8* quantization of the
# Linear layers reads a quarter of the bytes and often helps most on a CPU. Both are lossy: tokens may drift.

# %%
if device == "cpu":
    print(decoding.cpu_low_precision())
variants = ["auto"] if device == "cuda" else ["bfloat16", "float16", "int8"]
lowp = {}
for dtype in variants:
    lowp[dtype], reason = prepare_model(copy.deepcopy(fp32), dtype, device)
    g = time_decode(lowp[dtype], one, prompt, "static", TOKENS)
    same = sum(a == b for a, b in zip(g.tokens[0], baseline.tokens[0]))
    label = "int8" if dtype == "int8" else str(lowp[dtype].dtype).removeprefix("torch.")
    results.append(speed_row(f"static cache, {label}", g, baseline))
    print(f"{dtype}: {reason}; {same}/{TOKENS} greedy tokens as in float32")
Table(results)

# %% [markdown]
# What it means: on a GPU, half precision halves the bytes every token reads, and batch-1 decoding is bound
# by exactly that (section 7). On a CPU it depends on the instructions the CPU has — read the rows above
# rather than assuming; lower precision that comes out *slower* means the CPU converts instead of computing
# natively. Tokens that differ from float32 are the price of the smaller format (here, with random weights,
# a hint of sensitivity, not a quality measurement).
#
# ## 6. torch.compile (CUDA graphs on a GPU)
#
# A 77 M model at batch 1 is *overhead-bound* on a GPU: hundreds of small kernels per token, each launched
# from Python. `torch.compile(mode="reduce-overhead")` on a **fixed-shape** static cache captures the whole
# step as a CUDA graph and replays it with one launch — the upstream 2026 CUDA-graph path reports double
# speed (shared/facts.md). The first calls compile (tens of seconds to minutes); only later ones are fast.
# On a CPU there are no launches to save and the warm-up costs minutes, so `TRY_COMPILE="auto"` skips it there.

# %%
import time

if TRY_COMPILE is True or (TRY_COMPILE == "auto" and device == "cuda"):
    step = decoding.compiled_step(fp32)
    t0 = time.perf_counter()
    time_decode(fp32, one, prompt, "static", TOKENS, warmup=0, fixed_shape=True, step_fn=step)
    warm = time.perf_counter() - t0
    compiled = time_decode(fp32, one, prompt, "static", TOKENS, warmup=0, fixed_shape=True, step_fn=step)
    results.append(speed_row("static + torch.compile, float32", compiled, baseline))
    print(f"first run, compile included: {warm:.0f} s; same tokens: {compiled.tokens == baseline.tokens}")
else:
    print("torch.compile skipped on", device, "(set TRY_COMPILE = True to measure its warm-up and speed here)")
Table(results)

# %% [markdown]
# ## 7. The roofline: how fast *could* batch 1 be?
#
# Every decoded token reads all weights once (plus the K/V cache), so tokens/s ≤ bandwidth / bytes per
# token (`hardware.decode_ceiling_tokens_per_s`). For the real GPT stage in float16 with 500 cached
# positions, on a T4 and the 8 GB cards:

# %%
# NBVAL_CHECK_OUTPUT
Table(decoding.roofline_rows(["T4", "RTX-3070", "RTX-4060", "L4"], "float16"), digits=0)

# %%
best_b1 = max(results, key=lambda r: r["tokens/s"])
gpu = hardware.detect().gpu
if device == "cuda" and real and "bandwidth unknown" not in gpu.source:
    ceiling = hardware.decode_ceiling_tokens_per_s(decoding.weight_bytes_per_token(fp32, "float16"), gpu)
    print(f"measured best batch-1: {best_b1['tokens/s']:.0f} tokens/s = {best_b1['tokens/s'] / ceiling:.1%} of this GPU's ceiling")
else:
    print(f"measured best batch-1 here ({device}, {'real' if real else 'scaled-down'} model): "
          f"{best_b1['tokens/s']:.0f} tokens/s ({best_b1['technique']})")

# %% [markdown]
# What it means: the ceiling is thousands of tokens/s, far above what a Python loop of small kernels
# reaches at batch 1 (upstream reports 55–85 it/s on an RTX 4090, shared/facts.md). The gap is launch
# overhead, not bandwidth — which is why CUDA graphs help on a GPU, and why **batching** (several rows
# sharing every weight read) is the other big lever.
#
# ## 8. Sampling settings and their cost
#
# Upstream samples with repetition penalty 1.35 → top-p → temperature → top-k 15. Our `sample` does the same
# in one function with no host sync (an exponential race instead of `torch.multinomial`). Its cost per
# token, against the time of one decode step measured above:

# %%
from colab_tts.decoding import Sampling

settings = {"greedy": decoding.GREEDY, "upstream default (top-k 15, penalty 1.35)": Sampling(),
            "top-p 0.8": Sampling(top_p=0.8), "temperature 0.7, top-k 5": Sampling(temperature=0.7, top_k=5)}
sampling_rows = decoding.time_sampling(settings, config.vocab_size)
step_us = 1e6 / results[1]["tokens/s"]
for r in sampling_rows:
    r["share of a step"] = f"{r['us per token'] / step_us:.1%}"
Table(sampling_rows)

# %% [markdown]
# What it means: top-p sorts the vocabulary and costs the most; everything here is small next to a decode
# step of the real model, so pick sampling settings for quality, not speed.
#
# ## 9. Early stopping: EOS, caps, and finished rows leaving the batch
#
# A row stops at EOS (blocked for the first 11 steps upstream, 0.44 s of audio) or at its cap
# (`max_new_tokens`, upstream 1,500). In a batch, a finished row would otherwise keep costing work until the
# longest row ends; `generate` drops it from the batch (cache rows included). Counting the row-steps for
# our 8 segments decoded as one batch, each to its own length:

# %%
# NBVAL_CHECK_OUTPUT
caps = [TOKENS_PER_PHONEME * n for n in SEGMENT_PHONEMES]
runner = decoding.T2SRunner(fp32, segments, prompt, "static", max_new_tokens=max(caps))
batch = decoding.generate(runner, FIXED_LENGTH, config.eos_id, caps)
print("tokens per segment:", [len(t) for t in batch.tokens])
print(f"row-steps with finished rows dropped: {batch.row_steps}; if every row ran to the end: "
      f"{batch.steps * len(caps)} ({1 - batch.row_steps / (batch.steps * len(caps)):.0%} saved)")

# %% [markdown]
# ## 10. A long text: segments decoded in length buckets
#
# A long text is split into segments (by punctuation; here we take their phoneme counts as given). The
# upstream way decodes them one after another. Instead, sort them by length, put neighbours into buckets of
# `BATCH_SIZE`, left-pad each bucket and decode it as one batch with a static cache: every weight read now
# serves several rows, and similar lengths keep padding and idle rows small. Expect identical tokens in
# float32 and a speed-up that grows with the batch:

# %%
upstream = decode_segments(fp32, segments, prompt, FIXED_LENGTH, "concat", batch_size=1, max_new_tokens=caps)
long_rows = [speed_row("upstream: 1 at a time, concat, float32", upstream, upstream, decode_only=False)]
bucketed = decode_segments(fp32, segments, prompt, FIXED_LENGTH, "static", BATCH_SIZE, caps, progress=True)
long_rows.append(speed_row(f"buckets of {BATCH_SIZE}, static, float32", bucketed, upstream, decode_only=False))
for dtype, m in lowp.items():
    g = decode_segments(m, segments, prompt, FIXED_LENGTH, "static", BATCH_SIZE, caps)
    label = "int8" if dtype == "int8" else str(m.dtype).removeprefix("torch.")
    long_rows.append(speed_row(f"buckets of {BATCH_SIZE}, static, {label}", g, upstream, decode_only=False))
print("float32 tokens identical to the upstream way:", bucketed.tokens == upstream.tokens)
Table(long_rows)

# %% [markdown]
# What it means: the speed-up column is the whole long text, prefill included, against the upstream way on
# the same machine in the same run. At the scaled-down size used in CI, per-step Python overhead weighs
# more than at the real size, so the ratios differ; `benchmarks/gpt_stage.py` runs the same comparison at
# the real size (24 layers, hidden 512), where batching and int8 weigh more.
#
# ## 11. Summary chart

# %%
from colab_tts import plots

fig = plots.speedup_bars({"batch 1: speed-up over the upstream loop": results,
                          "long text: speed-up over the upstream way": long_rows})
save_figure(fig, "gpt_stage_speedups");

# %%
best = max(long_rows[1:], key=lambda r: r["speed-up"])
print(f"long text: best path '{best['technique']}' is {best['speed-up']:.1f}x the upstream way, RTF {best['RTF']:.2f}")
print(f"batch 1: static cache {results[1]['speed-up']:.2f}x, no cache {results[2]['speed-up']:.2f}x the upstream loop")

# %% [markdown]
# ## What we measured
#
# - The upstream decode loop (concat cache, float32) as the baseline, in tokens/s and real-time factor.
# - A static cache: the same tokens and, at batch 1, about the upstream loop's speed; what it buys is fixed
#   shapes (torch.compile, CUDA graphs) and in-place compaction of finished rows. No cache: much slower, and
#   worse with length.
# - Lower precision: resolved per device (float16 on a T4, bfloat16 from Ampere on); on a CPU, bf16 / fp16 /
#   dynamic int8 each measured — read the table, it depends on the CPU's instructions.
# - torch.compile: measured on a GPU (CUDA graphs on a fixed-shape static cache); skipped on a CPU, where
#   its warm-up costs minutes and there are no kernel launches to save.
# - The roofline: thousands of tokens/s on a T4 and 8 GB cards, far above batch-1 loops — overhead, not
#   bandwidth, is the limit, which is why CUDA graphs and batching pay.
# - Sampling costs little next to a decode step; dropping finished rows saves the row-steps counted in 9.
# - A long text in length buckets: identical float32 tokens and the speed-up printed above.
#   `benchmarks/gpt_stage.py` measures the same at the real size (24 layers, hidden 512).
