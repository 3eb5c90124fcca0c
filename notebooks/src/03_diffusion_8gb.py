# %% [markdown]
# # 03 · Fitting IndexTTS-2 into 8 GB: the settings first, then why, measured
#
# IndexTTS-2 with its defaults peaks at 8.15 GB on an RTX 4090 (*cited*: index-tts PR #755, 2026-08-12):
# on an 8 GB card it runs out of memory or sits at the limit. The first cell after the parameters gives the
# settings for an 8 GB card — your GPU if it is one, else `GPU_8GB` run on your GPU under a memory cap — and
# the command that runs them. *Why* follows, each claim measured on a stand-in for IndexTTS-2's
# flow-matching stage (offline: random weights, so its audio is noise).

# %% [markdown]
# ## What you will learn
#
# - the 8 GB settings for IndexTTS-2 on your GPU, and the command that runs them
# - why steps cost time but not memory, what fp16 and offloading save, why checkpointing saves nothing here
# - how chunking long text bounds the peak
# - on a GPU: real IndexTTS-2's peak per stage, and the recipe run under an emulated 8 GB cap

# %% tags=["parameters"]
# Parameters (a Colab form; papermill sets the same names).
# REAL_SIZE: None: real size on a GPU, reduced width on the CPU; True/False to force
REAL_SIZE = None  # @param {type:"raw"}
# STEPS: Euler steps to compare (IndexTTS-2 uses 25); on a GPU try (10, 25, 50, 100)
STEPS = (5, 10, 25)  # @param {type:"raw"}
# REFERENCE_STEPS: the converged solution deviations are measured against (computed once per input)
REFERENCE_STEPS = 200  # @param {type:"integer"}
# FRAMES: target mel frames per utterance (86 frames = 1 s at 22,050 Hz, hop 256)
FRAMES = 32  # @param {type:"integer"}
# PROMPT_FRAMES: reference-audio mel frames given as the prompt
PROMPT_FRAMES = 16  # @param {type:"integer"}
# CHUNK_TOKENS: split_text limits to compare; None = no split
CHUNK_TOKENS = (20, 60, None)  # @param {type:"raw"}
# CHUNK_STEPS: steps in the chunking section (memory does not depend on it; time does)
CHUNK_STEPS = 1  # @param {type:"integer"}
# TOKENS_PER_S: assumed speaking rate (text tokens per second of speech): only scales lengths
TOKENS_PER_S = 4.0  # @param {type:"number"}
# CPU_THREADS: one thread is steadier on a shared 2-core CPU
CPU_THREADS = 1  # @param {type:"integer"}
# SIMULATE_GPU: the GPU to plan for when there is none (a detected GPU always wins)
SIMULATE_GPU = "T4"  # @param {type:"string"}
# GPU_8GB: the 8 GB card to plan for when the detected GPU is not one: RTX-3070 or RTX-4060 (another size is refused)
GPU_8GB = "RTX-4060"  # @param {type:"string"}
# RUN_INDEXTTS2: None: run real IndexTTS-2 (section 8) only on CUDA; False to skip it there
RUN_INDEXTTS2 = None  # @param {type:"raw"}
# SEGMENTS: max_text_tokens_per_segment values for real IndexTTS-2 (120 is upstream's default)
SEGMENTS = (120, 40)  # @param {type:"raw"}
# DEPLOY_DIR: the runner's environment, clone, weights and outputs
DEPLOY_DIR = "colab_tts_deploy"  # @param {type:"string"}

# %%
from colab_tts import hardware
from colab_tts.lessons import diffusion_8gb as lesson

report = hardware.detect(simulate=SIMULATE_GPU)  # the detected GPU; the simulated one only without a GPU
print(lesson.settings_8gb(report.gpu, GPU_8GB, simulated=report.simulated))

# %% [markdown]
# What it means: these settings are *predicted* from IndexTTS-2's cited peak and a count of the GPT's KV cache;
# this project has not run IndexTTS-2 on these cards, so the first line under the plan says what to watch when
# you do. On a Colab GPU, section 8 measures real IndexTTS-2 and runs the recipe under the cap.
#
# ## Why
#
# A widely copied recipe says: cut the diffusion steps (its table: peak memory 7.9 GB at 100 steps, 4.9 GB
# at 20), use fp16, turn on gradient checkpointing (said to save memory), offload idle modules to the CPU,
# and synthesize long text in chunks. The same write-ups name Sambert-HiFiGAN beside IndexTTS-2; section 0
# checks that premise against its sources. The sections below measure each claim on a stand-in for
# IndexTTS-2's s2mel stage — a DiT velocity estimator built from IndexTTS-2's configuration (hidden 512, 8
# heads, depth 13, 80 mel bins, cited: <https://huggingface.co/IndexTeam/IndexTTS-2/blob/main/config.yaml>),
# an Euler flow-matching sampler with classifier-free guidance as in its `indextts/infer_v2.py`
# (index-tts/index-tts @ee40fa7), and a HiFi-GAN vocoder on BigVGAN v2's layout — and keep only what holds.
#
# **Offline (no GPU) this is a stand-in: IndexTTS-2's layout with random weights, so the audio is noise.**
# Shapes, bytes and seconds are real; quality cannot be judged. Everything then runs on this CPU at a reduced
# width. **On a Colab GPU it is two things:** the same stand-in cells on CUDA at the real size, every figure
# labelled with the detected GPU, and then (section 8) the real IndexTTS-2 with its trained checkpoints, run
# through our deploy runner, measured stage by stage and run under an emulated 8 GB cap — real speech out.
#
# Every number below says what kind it is: *measured* (in this run — each table and verdict names the
# device), *predicted* (by a roofline or by scaling, said where), or *cited* (source and date). Memory is in
# GiB/MiB; GB appears only where a source is quoted.

# %%
import torch

from colab_tts import flow
from colab_tts.display import Table, save_figure
from colab_tts.text import split_text

run = lesson.setup(SIMULATE_GPU, REAL_SIZE, CPU_THREADS)
device = run.device
torch.manual_seed(0)
dit, vocoder = flow.DiT(run.dit_config).eval(), flow.Vocoder(run.vocoder_config).eval()
print(run)

# %% [markdown]
# On a GPU the half precisions come from its compute capability (`hardware.resolve_dtype`): a T4 (7.5) gets
# float16 only, because it has no bfloat16 — `torch.cuda.is_bf16_supported()` answers True there by emulation,
# so it is not asked. Without a GPU both run on this CPU, and their timings are labelled as a CPU effect.
#
# ## 0. Which model has the 8 GB problem
#
# Expect the Sambert-HiFiGAN premise to fall apart on its architecture (*cited*): nothing in it has diffusion
# steps to cut.

# %%
print(lesson.sambert_premise())

# %% [markdown]
# So the 8 GB question is IndexTTS-2's, and the rest of the notebook is about its flow-matching stage.
#
# ## 1. The models at their real size
#
# Nothing below needs the weights, only the shapes. Building the real-size models on PyTorch's *meta* device
# costs nothing and gives exact parameter counts (*counted* from the architecture): expect about 95 M for the
# DiT and about 112 M for the vocoder (cited: BigVGAN v2's README lists 112 M for its 22 kHz 80-band model).

# %% tags=["nbval-check-output"]
rows = [{"stage": name, "params_M": flow.param_count(cfg) / 1e6, "fp32_MiB": flow.param_count(cfg) * 4 / 2**20,
         "fp16_MiB": flow.param_count(cfg) * 2 / 2**20}
        for name, cfg in [("s2mel DiT (IndexTTS-2 size)", flow.INDEXTTS2_DIT),
                          ("vocoder (BigVGAN v2 layout)", flow.BIGVGAN_V2_22K)]]
print(Table(rows, title="counted from the architecture (meta device)", digits=1))

# %% [markdown]
# What it means: the diffusion stage's weights are a few hundred MiB. Whatever fills an 8 GB card, it is not
# these two models alone; section 7 puts them beside IndexTTS-2's other stages.
#
# ## 2. Steps against time, memory and deviation — the circulated table, measured
#
# `claims_sweep` runs the whole stage (sampler + vocoder) for each step count in fp32, then at 25 steps in half
# precision and with offloading. Peak memory is measured by `track_peak` (CUDA's peak statistics on a GPU,
# live tensor storage on the CPU) and includes the weights on the device. The `error` column is the relative
# RMS deviation from a 200-step fp32 solution, computed once per input and reused by every row.
#
# Expect latency to grow linearly with steps, peak memory to stay flat (each Euler step allocates its
# buffers, uses them, and frees them before the next), and the deviation to shrink as steps grow. The
# fp32 25-step row appears twice: in the step scan (`part` "steps") and beside the variants it is compared
# with (`part` "variants") — a shared CPU's speed drifts, so only neighbours are compared.

# %%
measured = lesson.claims_sweep(dit, vocoder, steps=STEPS, at_steps=25, precisions=run.precisions,
                             target_frames=(FRAMES,), prompt_frames=PROMPT_FRAMES, reference_steps=REFERENCE_STEPS,
                             device=device)
measured.table(f"s2mel stage: deviation from the fp32 {REFERENCE_STEPS}-step solution")

# %%
for verdict in lesson.claim_steps(measured):
    print(verdict)
print(lesson.what_the_error_shows(measured))
save_figure(lesson.plot_steps(measured), "steps_latency_memory_error");

# %% [markdown]
# What it means: cutting steps saves **time** — the per-step cost is the same at every step count — and moves
# the result away from the converged solution; it does not change peak memory. A table in which peak memory
# falls from 7.9 GB to 4.9 GB as steps go from 100 to 20 does not describe this sampler, on this CPU or on a
# GPU. Whether 5 or 10 steps *sound* as good as 25 cannot be answered with random weights.
#
# ### The one case where memory does grow with steps
#
# If the sampler keeps every intermediate mel (for a progress animation, or a buggy loop that appends to a
# list), memory grows by one mel per step. Expect the first column flat and the second growing:

# %%
trajectory = lesson.trajectory_peaks(dit, steps=(5, 25), target_frames=FRAMES, prompt_frames=PROMPT_FRAMES,
                                     device=device)
print(trajectory.table("sampler alone: peak MiB without / with keep_trajectory"))
print(lesson.claim_trajectory(trajectory))

# %% [markdown]
# ## 3. fp32 against half precision
#
# Same sweep, 25 steps. The model runs in half precision with the LayerNorms computed in fp32 (fp16 overflows
# in the variance) and the sampler's state kept in fp32. Expect the peak to roughly halve (weights and
# activations are both half the bytes — true on every device) and the deviation to stay small. Expect the
# *speed* to differ by device: on a CPU half precision is usually slower; the verdict gives the GPU expectation.

# %%
for p in run.precisions:
    print(lesson.claim_precision(measured, p, 25))
    print(lesson.claim_precision_speed(measured, p, 25))

# %% [markdown]
# What it means: half precision is the change that really cuts the stage's memory. Its speed on this CPU is a
# CPU effect and does not carry over: a T4 runs float16 on tensor cores and has no bfloat16 at all. The
# deviation shows only that fp16 arithmetic stays close to fp32 on this computation.
#
# IndexTTS-2's own `use_fp16` is narrower than "half precision everywhere": it converts the GPT and leaves
# the s2mel stage in fp32. Expect its saving to be the GPT's half, not half of the whole (*cited* totals,
# share *computed*):

# %%
print(lesson.claim_fp16_halves_indextts2())

# %% [markdown]
# ## 4. Gradient checkpointing: no_grad against grad
#
# Checkpointing discards a block's activations in the forward pass and recomputes them in backward. At
# inference (`torch.no_grad`) nothing is kept for backward in the first place, so there is nothing to discard.
# Expect no change under no_grad and a large saving with grad enabled. The DiT applies checkpointing in both
# modes here, exactly as a careless recipe would.

# %%
ckpt = lesson.checkpointing_peaks(dit, target_frames=FRAMES, prompt_frames=PROMPT_FRAMES, device=device)
print(ckpt.table("one estimator call"))
for verdict in lesson.claim_checkpointing(ckpt):
    print(verdict)

# %% [markdown]
# What it means: at inference, gradient checkpointing saves nothing (diffusers skips it there for this reason).
# It is a training tool.
#
# ## 5. Offloading: peak against time
#
# With `offload=True` the stages run one at a time (`memory.model_offload`, like IndexTTS-2's low-VRAM mode
# and diffusers' `enable_model_cpu_offload`): the DiT is on the device while the sampler runs, then the vocoder
# replaces it. Without a GPU the "device" is emulated in host memory — moving a module there copies its
# weights, as a host-to-device copy would — so the peak counts the same bytes. Expect the peak to drop by the
# weights of the idle stage: little at the reduced width, where the vocoder is tiny, and the smaller of the two
# stages at real size (section 1). The time does not carry over from a CPU: the verdict predicts the PCIe cost.

# %%
print(lesson.claim_offload(measured, 25))
gpu_line = ("GPU expectation (T4): float16 on tensor cores, no bfloat16 (CC 7.5); offload copies cross PCIe"
            if device.type == "cpu" else "")
save_figure(lesson.plot_variants(measured, gpu_line), "precision_offload");

# %% [markdown]
# What it means: offloading trades time for memory. On a GPU the copies cross PCIe; section 7 prices them for
# IndexTTS-2's real stages.
#
# ## 6. Long text in chunks
#
# `split_text` cuts at sentence punctuation first (。！？；… and . ! ? ;), then at commas (，、 and ,), then hard,
# and never loses or reorders a character. The chunks of the two texts below, at 20 tokens:

# %% tags=["nbval-check-output"]
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
chunks = lesson.chunk_sweep(dit, vocoder, TEXTS, max_tokens=CHUNK_TOKENS, steps=CHUNK_STEPS,
                            tokens_per_s=TOKENS_PER_S, prompt_frames=PROMPT_FRAMES, device=device,
                            separate_timing=False)
print(chunks.table("chunk length against peak", digits=2))
for verdict in lesson.claim_chunks(chunks):
    print(verdict)

# %% [markdown]
# What it means: chunking bounds memory by the longest chunk instead of the whole text; IndexTTS-2 does it at
# 120 tokens and joins the pieces with 200 ms of silence (`colab_tts.text.join_audio`).
#
# ## 7. How the 8 GB plan is built
#
# `recommend_8gb`, which gave the settings at the top, starts from IndexTTS-2's *cited* peaks (PR #755, RTX
# 4090: 8.15 GB in fp32 with the emotion model, 6.54 GB with `use_fp16`) and adds the GPT's KV cache for one
# 120-token segment (*predicted* by count from its config). It does not add s2mel activations for a segment
# longer than the cited run's text: the stand-in's, measured here per second of audio at a reduced width and
# scaled by the width ratio, are printed beside the plan as a figure never checked at the real width or on a
# GPU, and left out of the peak. When the plan does not fit, stages run one at a time: the peak is then the
# largest stage plus what the cited total holds beyond the weights, and the PCIe copies are *predicted* from
# the bus's peak rate. It plans for `headroom=0.9` of the card (the rest: CUDA context and fragmentation).
# The top cell planned 8 GB-class cards; here is a 6 GB one. Expect offloading there, with its cost in seconds,
# and the stand-in's activations beside the plan.

# %%
act = lesson.stage_activations(dit, vocoder, FRAMES, PROMPT_FRAMES, steps=2, device=device)
six = hardware.GpuSpec("a 6 GB card", (8, 6), 5.8, 360, 25)
print(lesson.recommend_8gb(six, measured, act))  # the cards at the top fit resident; this one needs offload

# %% [markdown]
# What it costs in time: where everything stays resident, no copies (the `+0.00 s` of the first cell); fp16 for the GPT is
# faster on a GPU (IndexTTS-2's README: RTF 0.3748 → 0.3257 on an RTX 4090, *cited*), and chunking adds only
# each chunk's prompt frames (section 6). 25 steps is IndexTTS-2's fixed setting: fewer would save s2mel time
# and nothing in memory, and whether they sound as good needs the trained weights. Where offloading is needed,
# it costs at least the printed seconds per utterance to copy the stages over PCIe.
#
# ## 8. On a GPU: real IndexTTS-2 on an emulated 8 GB card
#
# Everything above is a stand-in. Here is the real model, with its trained checkpoints, and the same
# questions. IndexTTS-2 pins Python < 3.12, torch 2.8 and transformers 4.52.1 (*cited*: index-tts/index-tts
# pyproject.toml @ee40fa7), which clash with Colab's Python 3.13 image, so our runner
# (`python -m colab_tts.deploy indextts2`, or `colab_tts.deploy.deploy(...)`) makes IndexTTS-2 its own uv
# environment, clones upstream at the pinned commit, downloads the weights from `IndexTeam/IndexTTS-2` (it
# prints each hub repository's file count and GiB before it starts; `gpt.pth` alone is 3.3 GB, *cited*; the
# auxiliary models — w2v-BERT 2.0, the MaskGCT codec, CAMPPlus, BigVGAN — come on the first load) and caches
# them on Google Drive when Drive is mounted, so a second session does not download them again. Its worker
# runs `IndexTTS2(...)` and `infer(...)` in that environment and hands back JSON and wav files; **this
# kernel never imports upstream code.**
#
# What the runner changes around upstream's calls:
# - **an 8 GB card on a bigger GPU**: the worker caps its CUDA allocator with
#   `torch.cuda.set_per_process_memory_fraction` before anything loads, so a T4 or any bigger
#   GPU refuses to hand out more than an 8 GB card could — what runs under the cap fits that card;
# - **peak per stage**: it wraps the methods `infer` calls on each stage (GPT, w2v-BERT, semantic codec,
#   CAMPPlus, the s2mel CFM, BigVGAN) and measures each with `track_peak`'s CUDA statistics;
# - **offload of idle stages**: the same wrappers move a stage to the GPU only while it runs;
# - **diffusion steps**: `diffusion_steps = 25` is hard-coded inside `infer` (index-tts/index-tts
#   indextts/infer_v2.py @ee40fa7, lines 656-657), so there is no argument to pass; the runner wraps
#   `s2mel.models['cfm'].inference` and replaces its `n_timesteps` argument.
#
# The dry run prints what the runner would call, with which keyword arguments (nothing is installed):

# %% tags=["nbval-check-output"]
from colab_tts import deploy
from colab_tts.lessons import indextts2_8gb as real

dry = deploy.plan("indextts2")  # = python -m colab_tts.deploy indextts2 --dry-run
print(f"{dry['upstream']['repo']} @{dry['upstream']['commit'][:7]}, Python {dry['python']}, "
      f"weights: {', '.join(w['hub_repo'] for w in dry['weights'])}")
print(Table(real.plan_table(dry), title="the upstream calls and the kwargs the runner passes"))

# %% [markdown]
# `use_fp16`, `use_qwen_emo` (the QwenEmotion model), the offload hooks and the steps are fixed when
# `IndexTTS2(...)` is built, and the runner builds it once per run, so each of them costs a run of its own
# (the weights load again). There is no runner option that sweeps build settings in one run; the segment
# length is an argument of `infer`, so each run makes one `infer` call per value of `SEGMENTS` on the long
# English text of section 6. The sweep is therefore the four most telling runs, each changing one thing
# from the one before, without a cap (each shows what it *needs*):
# 1. fp32 with the emotion model, everything resident (upstream's defaults);
# 2. `use_fp16` (expect the GPT's half to go: upstream halves only the GPT);
# 3. no emotion model and idle stages offloaded (the emotion model's cost is the difference in the weights
#    held after the build — the hooks offload only after it; the rest of the drop is the offload);
# 4. 10 diffusion steps instead of 25 (expect time to fall and the s2mel stage's peak not to move).
#
# Expect, per stage, the GPT and the s2mel CFM to dominate, and with offload each stage's peak to include
# its own weights coming in. All figures are *measured* on the GPU the tables name (allocator statistics:
# tensors; the CUDA context comes on top on a real card, which is why the plan keeps 10% spare).

# %%
on_gpu = device.type == "cuda" if RUN_INDEXTTS2 is None else RUN_INDEXTTS2
if on_gpu:
    texts = {"long": TEXTS["en"]}
    results, failed = real.run_sweep(texts, SEGMENTS, DEPLOY_DIR)
    for name, error in failed.items():
        print(f"{name}: {error}")
    runs = real.summaries(results)
    where = f"real IndexTTS-2, measured on {runs[0]['device']}, no cap"
    print(Table(runs, real.RUN_COLUMNS, title=f"each run: weights held after the build, allocator peak, infer time ({where})"))
    print(Table(real.stage_table(results), title=f"peak GiB per stage above its start ({where})"))
else:
    print("Skipped (no CUDA here): real IndexTTS-2's sweep and its run under the 8 GB cap need a GPU and "
          "its trained weights (several GiB); on a Colab GPU this section runs them.")

# %% [markdown]
# What it means: the run table gives each setting's real price, and the stage table shows where it goes.
# `recipe_from_runs` now picks, among the measured runs whose allocator peak fits `headroom=0.9` of the 8 GB card
# (`GPU_8GB`), the one closest to upstream — 25 steps first, then the emotion model kept, then the longest
# segments — and the fastest of those; the rest of the card is for the CUDA context. Then the runner runs
# that recipe once more with the allocator **capped at that share** (`memory_cap_gib`), on the real text: if it fits, you hear the real speech below; if
# not, the runner's one-line error says so. Expect `use_fp16` to be enough with the emotion model kept
# (*cited*: 6.54 GB on an RTX 4090 for one short utterance, index-tts PR #755, 2026-08-12), unless the long
# text's activations push it over; then the emotion model goes, and offload comes only after that.

# %%
if on_gpu:
    recipe = real.recipe_from_runs(runs, GPU_8GB)
    print(recipe)
    capped, error = real.run_recipe(recipe, texts, recipe.budget_gib, DEPLOY_DIR)
    if error:
        print(f"under a {recipe.budget_gib} GiB cap it did not fit: {error}")
    else:
        print(Table(real.call_table(capped), title=f"the recipe under a {recipe.budget_gib} GiB cap, "
                                                   f"measured on {capped['device']}"))
        from IPython.display import display

        for label, player in real.players(capped):
            print(f"real IndexTTS-2 ({label}):")
            display(player)

# %% [markdown]
# What it means: section 7's plan was *predicted* from cited totals and a count of the KV cache; this one
# is *measured* on the real model, and the capped run shows it fits an 8 GB card — the speech is real, so
# here (unlike the stand-in) you can judge what `use_fp16` or fewer steps do to the sound.
#
# ## 9. Try it: the steps slider
#
# The same flow stage behind a panel: type a sentence, move the steps slider, press **Synthesize**. Expect the
# time to follow the steps and the memory gauge not to. Offline the conditioning is random, so the audio is
# noise; on a GPU an out-of-memory error shows up in the panel as advice (offload, half precision, shorter
# chunks) instead of a traceback.

# %%
from colab_tts.widgets import MemoryGauge, SynthesisPanel, timing_line

gauge = MemoryGauge(run.gpu if run.gpu is not None and not run.simulated else GPU_8GB)
panel = SynthesisPanel.for_flow(flow.FlowTTS(dit, vocoder, prompt_frames=PROMPT_FRAMES, device=device),
                                text="A short sentence for the flow stage.", gauge=gauge)
panel.sliders["steps"].value = STEPS[0]
panel.button.click()  # what pressing the button does
print(f"panel says ({run.where}):", panel.error or timing_line(panel.speech))
panel

# %% [markdown]
# ## What we measured
#
# Offline (no GPU): sections 1-7 and 9 ran the stand-in — IndexTTS-2's layout with random weights, so the
# audio is noise — on this CPU at a reduced width; section 8 was skipped. On a Colab GPU: the same stand-in
# on CUDA at the real size, plus real IndexTTS-2 through the runner (section 8). Each line names what it
# rests on; every verdict prints the device it was measured on.
#
# - **Sambert-HiFiGAN** (section 0, *cited*): it has no diffusion stage and runs on the CPU; the 8 GB
#   problem is IndexTTS-2's.
# - **Steps** (section 2): latency grows linearly with steps and peak memory does not move — the circulated
#   "7.9 GB at 100 steps, 4.9 GB at 20" is refuted, and this transfers to a GPU (it is the sampler's buffer
#   reuse, not the device). Memory grows with steps only when the trajectory is kept. The deviation column
#   is numerical, not quality.
# - **Half precision** (section 3): the stage's peak roughly halves (bytes: transfers). Its speed on a CPU
#   does not transfer: a T4 has fp16 tensor cores and no bfloat16. IndexTTS-2's `use_fp16` halves only the
#   GPT: about −20% of the whole (*cited* 8.15 → 6.54 GB), not half.
# - **Gradient checkpointing** (section 4): refuted at inference (no change under no_grad, on any device);
#   the saving is real only with grad.
# - **Offloading** (section 5): the peak drops by the idle stage's weights (transfers); the time does not —
#   on a GPU every call pays the PCIe copies (section 7 predicts them).
# - **Chunking** (section 6): on a long Chinese and a long English text the peak follows the longest chunk.
# - **The 8 GB plan** (first cell, section 7): *predicted* from IndexTTS-2's cited peak and the GPT's KV cache
#   for one segment, counted; the stand-in's activations scaled from this CPU are printed and left out of the
#   peak. This project has not run IndexTTS-2 on the cards it plans for: the plan's first line says what to
#   watch on the card.
# - **Real IndexTTS-2** (section 8, GPU only): peak memory per stage and in total for fp32 / `use_fp16`, with
#   and without the emotion model, with idle stages offloaded, at each segment length and at 10 vs 25 steps,
#   *measured* on the GPU the tables name; the 8 GB recipe picked from those runs and run under an emulated
#   8 GB cap, with the real speech to listen to. Offline it was skipped (no CUDA, no weights).
