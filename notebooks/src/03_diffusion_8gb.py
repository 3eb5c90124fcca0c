# %% [markdown]
# # 03 · Fitting a diffusion / flow-matching TTS stage into 8 GB, measured
#
# IndexTTS-2 and Sambert-HiFiGAN run out of memory on 8 GB cards, and a widely copied recipe says: cut the diffusion steps (its table: peak memory 7.9 GB at 100 steps, 4.9 GB at 20), use fp16, turn on gradient checkpointing ("saves 1.2 GB"), offload idle modules to the CPU, and synthesize long text in chunks. This notebook measures each claim on a stand-in for IndexTTS-2's s2mel stage — a DiT velocity estimator at IndexTTS-2's size (hidden 512, 8 heads, depth 13, 80 mel bins), an Euler flow-matching sampler with classifier-free guidance, and a HiFi-GAN vocoder on BigVGAN v2's layout — and keeps only what holds.
#
# **Offline, the weights are random and the audio is noise; the mechanics and the measurements are real.** Here (CI, no GPU) everything runs on the CPU at a reduced width so the notebook finishes in about a minute; on a Colab GPU the same cells run on CUDA at the real size.

# %% [markdown]
# ## What you will learn
#
# - why each Euler step reuses the same buffers, so steps cost time but not memory
# - what fp16 / bf16 save, and why a T4 gets fp16
# - why gradient checkpointing saves nothing at inference (and what it saves in training)
# - what offloading idle stages buys and what it costs in time
# - how chunking long Chinese and English text bounds peak memory
# - an 8 GB recipe derived from these measurements, with its cost in time

# %% tags=["parameters"]
# Parameters: change these, or let papermill set them.
REAL_SIZE = None        # None: real size on a GPU, reduced width on the CPU; True/False to force
STEPS = (5, 10, 25)     # Euler steps to compare (IndexTTS-2 uses 25); on a GPU try (10, 25, 50, 100)
REFERENCE_STEPS = 200   # the "exact" solution errors are measured against (computed once per input)
FRAMES = 32             # target mel frames per utterance (86 frames = 1 s at 22,050 Hz, hop 256)
PROMPT_FRAMES = 16      # reference-audio mel frames given as the prompt
CHUNK_TOKENS = (20, 60, None)  # split_text limits to compare; None = no split
CHUNK_STEPS = 1         # steps in the chunking section (memory does not depend on it; time does)
TOKENS_PER_S = 4.0      # assumed speaking rate (text tokens per second of speech): only scales lengths
CPU_THREADS = 1         # one thread is steadier on a shared 2-core CPU
GPU_8GB = "RTX-4060"    # the 8 GB card to plan for (any catalog name)

# %%
import torch

from colab_tts import flow, hardware
from colab_tts.display import Table, save_figure
from colab_tts.memory import accelerator
from colab_tts.text import split_text

device = accelerator()
if device.type == "cpu":
    torch.set_num_threads(CPU_THREADS)
real = (device.type == "cuda") if REAL_SIZE is None else REAL_SIZE
dit_cfg = flow.INDEXTTS2_DIT if real else flow.SMALL_DIT
voc_cfg = flow.BIGVGAN_V2_22K if real else flow.SMALL_VOCODER
torch.manual_seed(0)
dit, vocoder = flow.DiT(dit_cfg).eval(), flow.Vocoder(voc_cfg).eval()
half = hardware.pick_dtype(hardware.detect(simulate="T4").gpu)  # float16 on a T4, bfloat16 on Ampere+
print(f"device: {device}; DiT hidden {dit_cfg.hidden}, depth {dit_cfg.depth}; vocoder width {voc_cfg.channels}; "
      f"half precision here: {half}")

# %% [markdown]
# ## 1. The models at their real size
#
# Nothing below needs the weights, only the shapes. Building the real-size models on PyTorch's *meta* device
# costs nothing and gives the exact parameter counts: expect about 95 M for the DiT and about 112 M for the
# vocoder (BigVGAN v2's README lists 112 M for its 22 kHz 80-band model).

# %%
# NBVAL_CHECK_OUTPUT
rows = [{"stage": name, "params_M": flow.param_count(cfg) / 1e6, "fp32_MiB": flow.param_count(cfg) * 4 / 2**20,
         "fp16_MiB": flow.param_count(cfg) * 2 / 2**20}
        for name, cfg in [("s2mel DiT (IndexTTS-2 size)", flow.INDEXTTS2_DIT),
                          ("vocoder (BigVGAN v2 layout)", flow.BIGVGAN_V2_22K)]]
print(Table(rows, digits=1))

# %% [markdown]
# What it means: the diffusion stage's weights are a few hundred MiB. Whatever fills an 8 GB card, it is not
# these two models alone; section 7 puts them beside IndexTTS-2's other stages.
#
# ## 2. Steps against time, memory and error — the seed's table, measured
#
# `seed_sweep` runs the whole stage (sampler + vocoder) for each step count in fp32, then at 25 steps in half
# precision and with offloading. Peak memory is measured by `track_peak` (CUDA's peak statistics on a GPU,
# live tensor storage on the CPU) and includes the weights on the device. The error is the relative
# RMS distance to a 200-step fp32 solution, computed once per input and reused by every row.
#
# Expect latency to grow linearly with steps, peak memory to stay flat (each Euler step allocates its
# buffers, uses them, and frees them before the next), and the error to shrink roughly as 1/steps. The fp32
# 25-step row appears twice: once in the step scan (`part` "steps") and once beside the variants it is
# compared with (`part` "variants") — a shared CPU's speed drifts, so only neighbours are compared.

# %%
measured = flow.seed_sweep(dit, vocoder, steps=STEPS, at_steps=25, precisions=(half, "bfloat16"),
                           target_frames=(FRAMES,), prompt_frames=PROMPT_FRAMES, reference_steps=REFERENCE_STEPS,
                           device=device)
measured.table(f"s2mel stage on {device}: error against the fp32 {REFERENCE_STEPS}-step reference")

# %%
for line in flow.claim_steps(measured):
    print(line)
fig = flow.plot_steps(measured)
save_figure(fig, "steps_latency_memory_error");

# %% [markdown]
# What it means: cutting steps saves **time** — the per-step cost is the same at every step count — and costs
# accuracy; it does not change peak memory. A table in which peak memory falls from 7.9 GB to 4.9 GB as steps
# go from 100 to 20 does not describe this sampler.
#
# ### The one case where memory does grow with steps
#
# If the sampler keeps every intermediate mel (for a progress animation, or a buggy loop that appends to a
# list), memory grows by one mel per step. Expect the first column flat and the second growing:

# %%
trajectory = flow.trajectory_peaks(dit, steps=(5, 25), target_frames=FRAMES, prompt_frames=PROMPT_FRAMES, device=device)
print(Table(trajectory, digits=3))
print(flow.claim_trajectory(trajectory))

# %% [markdown]
# ## 3. fp32 against fp16 / bf16
#
# Same sweep, 25 steps. The model runs in half precision with the LayerNorms computed in fp32 (fp16 overflows
# in the variance) and the sampler's state kept in fp32. Expect the peak to roughly halve (weights and
# activations are both half the bytes) and the error to stay near the fp32 error. On a T4 (compute capability
# 7.5) the half precision is float16: it has no bfloat16.

# %%
for p in (half, "bfloat16"):
    print(flow.claim_precision(measured, p, 25))
print(hardware.resolve_dtype("bfloat16", "T4").reason)

# %% [markdown]
# What it means: half precision is the change that really cuts memory. On the CPU it is not faster (look at the
# latency column); on a GPU with tensor cores it is.
#
# ## 4. Gradient checkpointing: no_grad against grad
#
# Checkpointing discards a block's activations in the forward pass and recomputes them in backward. At
# inference (`torch.no_grad`) nothing is kept for backward in the first place, so there is nothing to discard.
# Expect no change under no_grad and a large saving with grad enabled. The DiT applies checkpointing in both
# modes here, exactly as a careless recipe would.

# %%
ckpt = flow.checkpointing_peaks(dit, target_frames=FRAMES, prompt_frames=PROMPT_FRAMES, device=device)
print(Table(ckpt, digits=3))
for line in flow.claim_checkpointing(ckpt):
    print(line)

# %% [markdown]
# What it means: at inference, gradient checkpointing saves nothing (diffusers skips it there for this reason).
# It is a training tool.
#
# ## 5. Offloading: peak against time
#
# With `offload=True` the stages run one at a time (`memory.model_offload`, like IndexTTS-2's low-VRAM mode
# and diffusers' `enable_model_cpu_offload`): the DiT is on the device while the sampler runs, then the vocoder
# replaces it. A resident pipeline copies its weights to the device once; an offloading one on every call. Without a GPU the "device" is emulated in host memory — moving a module there copies its weights
# as a host-to-device copy would — so the peak counts the same bytes. Expect the peak to drop by the weights of
# the stage that is idle: little at this reduced width, where the vocoder is tiny, and the smaller of the two
# stages at real size (section 1: 362 of 790 MiB in fp32). On the CPU the "copy" is a memcpy of a few MiB, so the latency ratio here is mostly noise;
# on a GPU it is a PCIe transfer.

# %%
print(flow.claim_offload(measured, 25))

# %% [markdown]
# What it means: offloading trades time for memory. On a GPU the copies cross PCIe; section 7 estimates that
# cost for IndexTTS-2's real stages.
#
# ## 6. Long text in chunks
#
# `split_text` cuts at sentence punctuation first (。！？；… and . ! ? ;), then at commas (，、 and ,), then hard,
# and never loses or reorders a character. The chunks of the two texts below, at 20 tokens:

# %%
# NBVAL_CHECK_OUTPUT
TEXTS = {
    "zh": "今天天气很好，我们去公园散步吧。你想一起来吗？当然！不过，我要先把作业写完，再吃午饭；然后我们出发。"
          "公园里有很多人，有的在跑步，有的在下棋，还有几个孩子在湖边喂鸭子。傍晚的时候，风停了，我们慢慢地走回家。",
    "en": "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were "
          "striking thirteen. Then, slowly, the rain began to fall; we went inside, made some tea, and waited. "
          "By evening the sky had cleared again, and the streets were full of people walking home.",
}
for name, text in TEXTS.items():
    for chunk in split_text(text, 20):
        print(f"{name}: {chunk}")

# %% [markdown]
# Each chunk becomes `tokens / TOKENS_PER_S` seconds of speech (an assumed speaking rate, a parameter) and runs
# through the stage one after another, so the peak follows the longest chunk. Expect the peak to fall as the
# chunks get shorter, and the total time to change less: the same audio is produced either way, each chunk
# re-reads the prompt, and attention over one long unsplit chunk costs more per frame. (Here the times are
# taken while memory is tracked, which slows every row alike on the CPU.)

# %%
chunks = flow.chunk_sweep(dit, vocoder, TEXTS, max_tokens=CHUNK_TOKENS, steps=CHUNK_STEPS,
                          tokens_per_s=TOKENS_PER_S, prompt_frames=PROMPT_FRAMES, device=device,
                          separate_timing=False)
print(Table(chunks, digits=2))
for line in flow.claim_chunks(chunks):
    print(line)

# %% [markdown]
# What it means: chunking bounds memory by the longest chunk instead of the whole text; IndexTTS-2 does it at
# 120 tokens and joins the pieces with 200 ms of silence (`colab_tts.text.join_audio`).
#
# ## 7. The 8 GB recipe
#
# `recommend_8gb` combines the measurements above with IndexTTS-2's real sizes. Resident memory is
# IndexTTS-2's own measured total (shared/facts.md, RTX 4090: 6.54 GB with the GPT in half precision and the
# emotion model, 8.15 GB all in fp32) plus the activations of one 120-token chunk, measured here per second of
# audio and scaled to the real widths. When that does not fit, stages run one at a time: the peak is then the
# largest stage (the GPT's gpt.pth is 3.3 GB in fp32, the w2v-BERT 2.0 encoder has 580 M parameters, the DiT and
# vocoder are counted above) plus what the measured total holds beyond the weights. It plans for 90% of the card
# (the rest: CUDA context and fragmentation). Expect the GPT in half precision and no offload on an 8 GB card,
# and offloading — with its cost in seconds — on a 6 GB one.

# %%
act = flow.stage_activations(dit, vocoder, FRAMES, PROMPT_FRAMES, steps=2, device=device)
for gpu in (GPU_8GB, "T4", hardware.GpuSpec("a 6 GB card", (8, 6), 5.8, 360, 25)):
    print(flow.recommend_8gb(gpu, measured, act), end="\n\n")

# %% [markdown]
# What it costs in time: where everything stays resident, no copies (the `+0.00 s` above); half precision is
# no slower on a GPU, and chunking adds only each chunk's prompt frames (section 6). 25 steps is IndexTTS-2's
# default: fewer steps would save the share of s2mel time printed above, at the error printed beside it, and
# do nothing for memory. Where offloading is needed, it costs the printed seconds per utterance to copy the
# stages over PCIe.
#
# A summary of what was measured:

# %%
at25 = [r for r in measured.rows if r.get("part") == "variants"]
fig = flow.plot_bars(at25, ["precision", "offload"], ["peak_mib", "latency_s"],
                     f"25 steps on {device}: precision and offloading")
save_figure(fig, "precision_offload");

# %% [markdown]
# ## 8. Try it: the steps slider
#
# The same flow stage behind a panel: type a sentence, move the steps slider, press **Synthesize**. Expect the
# time to follow the steps and the memory gauge not to. Offline the conditioning is random, so the audio is
# noise; on a GPU an out-of-memory error shows up in the panel as advice (offload, half precision, shorter
# chunks) instead of a traceback.

# %%
from colab_tts.widgets import MemoryGauge, SynthesisPanel, timing_line

gauge = MemoryGauge(GPU_8GB)
panel = SynthesisPanel.for_flow(flow.FlowTTS(dit, vocoder, prompt_frames=PROMPT_FRAMES, device=device),
                                text="A short sentence for the flow stage.", gauge=gauge)
panel.sliders["steps"].value = STEPS[0]
panel.button.click()  # what pressing the button does
print("panel says:", panel.error or timing_line(panel.speech))
panel

# %% [markdown]
# ## What we measured
#
# - **Steps** (section 2): latency grows linearly with steps and peak memory does not move; the seed's
#   "7.9 GB at 100 steps, 4.9 GB at 20" is refuted. Memory grows with steps only when the trajectory is kept.
# - **fp16 / bf16** (section 3): confirmed — the peak roughly halves and the error stays near fp32's. A T4 gets
#   float16.
# - **Gradient checkpointing** (section 4): refuted at inference (no change under no_grad); the saving is real
#   only with grad.
# - **Offloading** (section 5): confirmed — the peak drops by the idle stage's weights. On a GPU every call pays
#   the PCIe copies (section 7 prices them); on the CPU the "copy" is a memcpy lost in the timing noise.
# - **Chunking** (section 6): confirmed on a long Chinese and a long English text — the peak follows the longest
#   chunk.
# - **The 8 GB recipe** (section 7): printed above with its reasons and its cost in time. On the CPU the
#   absolute numbers are small because the width is reduced; the ratios and verdicts are the point. On a Colab
#   GPU rerun with the real size (the default there) for the real numbers.
