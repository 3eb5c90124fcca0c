# ---
# jupyter:
#   colab_tts:
#     install: [vllm]
# ---

# %% [markdown]
# # 01 · Orpheus-TTS on a T4 in float16, end to end
#
# Orpheus-TTS (a 3.3 B Llama that writes SNAC audio tokens) fails twice on a free Colab **T4**: its bfloat16 weights need a newer GPU, and vLLM's default context does not fit the KV cache. The PyPI package `orpheus-speech` 0.1.0 adds a third problem: it stops on the wrong token. This notebook fixes each one, gets speech out, and then measures how fast it can ever be on a T4.
#
# **Offline** (no GPU, as in CI) the same code runs on a *tiny random model* with Orpheus's vocabulary and special tokens and on SNAC with random weights, through real vLLM (its CPU build): the mechanics and the measurements are real, **the audio is noise**. On a Colab GPU it loads the real model.

# %% [markdown]
# ## What you will learn
#
# - what bfloat16 does on a T4 and why float16 is the fix
# - why orpheus-speech 0.1.0 fails (bf16, no max_model_len, stop id 49158) and what to pass instead
# - how Orpheus turns 7 tokens into 2048 samples of 24 kHz audio, whole or streamed
# - the honest speed limit: a T4's memory bandwidth caps a 3.3 B fp16 model below real time at batch 1

# %% tags=["parameters"]
# Parameters: change these, or let papermill set them.
BACKEND = "vllm"  # "vllm" or "transformers" (the same prompts through AutoModelForCausalLM.generate)
VOICE = "tara"  # tara, leah, jess, leo, dan, mia, zac, zoe
TEXT = "Hello! This is Orpheus, running in float16 on a T4."
MAX_AUDIO_SECONDS = 30  # the longest utterance you want: sets max_model_len on a GPU
DEMO_AUDIO_SECONDS = 0.5  # offline demo only: keep the CPU run short
SIMULATE_GPU = "T4"  # used when no GPU is present

# %%
import torch

from colab_tts import hardware, orpheus
from colab_tts.display import Table, output_dir, save_figure
from colab_tts.kv_cache import plan_vllm
from colab_tts.models import ModelSpec
from colab_tts.orpheus import OrpheusTTS

# %% [markdown]
# ## 1. The GPU, and what bfloat16 does on it
#
# Expect a compute capability of 7.5 on a T4 (simulated here when there is no GPU) and *float16* as the dtype.

# %%
report = hardware.detect(simulate=SIMULATE_GPU)
print(report)
gpu = report.gpu
ON_GPU = torch.cuda.is_available()

# %% [markdown]
# Orpheus ships bfloat16 weights. On a T4 vLLM refuses them with the error below (quoted, not raised: the
# notebook must go on). `resolve_dtype` turns the request into float16 and says why; with `strict=True` it
# raises instead, naming the fix.

# %%
# NBVAL_CHECK_OUTPUT
message, source = hardware.BF16_ERRORS["vLLM"]
print("vLLM with dtype=bfloat16 on a T4:\n ", message, f"\n  (source: {source})\n")
print("resolve_dtype:", hardware.resolve_dtype("bfloat16", "T4").reason)
try:
    orpheus.engine_kwargs_for("T4", dtype="bfloat16", strict=True)
except ValueError as err:
    print("strict:       ValueError:", err)

# %% [markdown]
# ## 2. Why orpheus-speech 0.1.0 fails, and what colab_tts passes instead
#
# The published package hard-codes bfloat16, cannot pass `max_model_len` (so vLLM takes the config's 131,072
# tokens, which a T4's KV cache cannot hold) and stops on token 49158, while Orpheus ends speech with 128258
# (shared/facts.md). Expect the plan for 131,072 tokens to say it does not fit, and ours to fit.

# %%
# NBVAL_CHECK_OUTPUT
print("orpheus-speech 0.1.0:")
for key, value in orpheus.ORPHEUS_SPEECH_0_1_0.items():
    print(f"  {key:15} {value}")
print("\nits context on a T4:", plan_vllm("orpheus-3b", "T4", dtype="float16", max_model_len=131072).message())
kwargs, plan = orpheus.engine_kwargs_for("T4", max_audio_seconds=MAX_AUDIO_SECONDS)
print(f"\ncolab_tts for {MAX_AUDIO_SECONDS} s of audio:")
print("  vllm.LLM(model, **", kwargs, ")")
print("  stop_token_ids =", [orpheus.END_OF_SPEECH], " request ids: unique per request")
print(" ", plan.message())

# %% [markdown]
# What it means: `max_model_len` only has to hold the prompt plus the audio you want: 82.03 tokens per second
# of speech. 30 s needs a few thousand tokens, not 131,072, and the KV cache left on a T4 then holds several
# such requests at once (notebook 02 derives this budget step by step).
#
# ## 3. Load Orpheus
#
# On a Colab GPU this downloads canopylabs/orpheus-3b-0.1-ft and SNAC and starts vLLM with the arguments
# above. Offline it builds the demo model (a 2-layer Llama with Orpheus's 156,940-token vocabulary and
# special ids; a planted rule makes it write well-formed audio frames) and starts the same engine on the
# CPU. vLLM's engine core runs inside this kernel (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so no child process
# is needed in Jupyter. Starting vLLM takes a minute here.

# %%
if ON_GPU:
    tts = OrpheusTTS.from_pretrained(backend=BACKEND, max_audio_seconds=MAX_AUDIO_SECONDS)
else:
    tts = OrpheusTTS.offline_demo(BACKEND, max_audio_seconds=DEMO_AUDIO_SECONDS)
print(tts)
print("engine arguments:", tts.engine_kwargs)

# %% [markdown]
# ## 4. Synthesize, play, save, plot
#
# `synthesize` formats the prompt (start-of-human, `"{voice}: {text}"`, end-of-turn, end-of-human,
# start-of-AI, start-of-speech), samples with Orpheus's defaults (temperature 0.6, top_p 0.8, repetition
# penalty 1.3), stops on 128258, maps the tokens to SNAC codes and decodes them. Expect a Speech with its
# timings; offline the duration is short and the sound is noise.

# %%
speech = tts.synthesize(TEXT, voice=VOICE, seed=0)
print(Table([speech.summary()], digits=3))
speech.play()

# %%
path = speech.save(output_dir() / "orpheus_t4.wav")
print("saved", path.name, f"({path.stat().st_size:,} bytes)")
fig = speech.plot("Orpheus output" + ("" if ON_GPU else " (offline demo: noise)"))
save_figure(fig, "orpheus_waveform");

# %% [markdown]
# What it means: the real-time factor (RTF) is seconds spent per second of audio; below 1 is faster than real
# time. Offline it measures a tiny model on a shared CPU, so only the mechanics carry over.
#
# ## 5. Streaming: audio before the text is done
#
# `stream` decodes while tokens arrive: the first chunk after at most 4 frames (28 tokens), then one per
# frame, each decoded with 2 frames of left context and 1 frame of lookahead, so the stream is close to the
# whole-utterance decode (the tests measure the difference). Expect the first chunk long before the last.

# %%
import time

t0, arrivals, chunks = time.perf_counter(), [], []
for chunk in tts.stream(TEXT, voice=VOICE, seed=1, max_tokens=35):
    arrivals.append(time.perf_counter() - t0)
    chunks.append(chunk)
print(f"{len(chunks)} chunks; first after {arrivals[0]:.2f} s, last after {arrivals[-1]:.2f} s; "
      f"{sum(map(len, chunks)) / orpheus.SAMPLE_RATE:.2f} s of audio")

# %% [markdown]
# ## 6. The honest speed lesson
#
# At batch 1, every generated token reads all the weights once. Orpheus has 3.30 B parameters: 6.6 GB in
# float16. A T4 reads 320 GB/s (shared/facts.md), so it can never exceed ~48 tokens/s, while real time needs
# 82.03. `hardware.decode_ceiling_tokens_per_s` computes the bound; `speed_ceiling_rows` applies it to
# smaller weights (8-bit, 4-bit) and to batches of requests, which share one read of the weights per step.

# %%
# NBVAL_CHECK_OUTPUT
weights = ModelSpec.known("orpheus-3b").weight_bytes("float16")
ceiling = hardware.decode_ceiling_tokens_per_s(weights, "T4")
print(f"fp16 weights {weights / 1e9:.2f} GB -> T4 ceiling {ceiling:.1f} tokens/s at batch 1; "
      f"real time needs {orpheus.TOKENS_PER_SECOND:.2f} ({ceiling / orpheus.TOKENS_PER_SECOND:.2f}x real time)")
rows = orpheus.speed_ceiling_rows("T4", batches=(1, 4, 16))
print(Table(rows, digits=1))

# %% [markdown]
# The measured figure from section 4, beside the ceiling. On a Colab T4 expect it at 60–80 % of the
# ceiling (good engines reach that on big models, shared/facts.md); offline it is a tiny model on a CPU and
# not comparable.

# %%
measured = speech.tokens_per_s
where = f"{gpu.name}" if ON_GPU else "this CPU (offline demo, not comparable)"
print(f"measured: {measured:.1f} tokens/s on {where}; T4 fp16 ceiling {ceiling:.1f} tokens/s")
fig = orpheus.plot_speed_ceiling(orpheus.speed_ceiling_rows("T4"), measured if ON_GPU else None,
                                 title="Orpheus 3B on a T4: decode ceiling per request")
save_figure(fig, "orpheus_speed_ceiling");

# %% [markdown]
# What it means: in float16 a T4 cannot make one voice in real time at all — no software fix beats the
# memory bandwidth. 8-bit weights halve the bytes per token and lift the ceiling above real time; 4-bit
# quarters them. Batching does not speed up one request, but several requests share each read of the
# weights, so the total throughput grows almost linearly until the KV reads and the compute limit catch up.

# %% [markdown]
# ## 7. Try it: the synthesis panel
#
# The same `synthesize` call behind a panel: type a text, pick a voice, move the sampling sliders, press
# **Synthesize**. The panel shows a progress bar while it runs, then the player and the timing (tokens/s and
# real-time factor); a bad input (an empty text, a repetition penalty below 1.1) shows as one line in the panel.
# The gauge compares GPU memory in use with the plan (offline it shows the plan's total for the simulated GPU).

# %%
from colab_tts.widgets import MemoryGauge, SynthesisPanel, timing_line

planned = (tts.plan or plan).budget_gib  # offline: the T4 plan from section 2
gauge = MemoryGauge(gpu, planned_gib=planned)
if not ON_GPU:
    gauge.refresh(planned)  # no GPU to read: show what the plan reserves
panel = SynthesisPanel(tts, text=TEXT, gauge=gauge)
panel.button.click()  # what pressing the button does
print("panel says:", panel.error or timing_line(panel.speech))
panel

# %%
tts.close()  # frees the engine's memory

# %% [markdown]
# ## What we measured
#
# - bfloat16 on a T4: the error vLLM gives, and `resolve_dtype`'s float16 fix (strict mode raises instead).
# - orpheus-speech 0.1.0's settings next to ours: float16, `max_model_len` from the longest audio wanted
#   (the 131,072-token default does not fit a T4), stop id 128258, unique request ids.
# - One synthesis end to end, with time to first token, tokens/s and real-time factor, saved as a wav and
#   plotted; a streamed synthesis with the arrival time of its first chunk.
# - The roofline: 6.6 GB of fp16 weights cap a T4 at ~48 tokens/s per request against 82 needed for real
#   time; 8-bit and 4-bit weights and batching move that ceiling. SNAC decoding speed is measured
#   separately by `benchmarks/snac_decode.py`.
