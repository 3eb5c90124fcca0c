"""The flow-matching stage at run time: Euler sampling with classifier-free guidance, then the vocoder.

``sample`` integrates the DiT's velocity from noise (t=0) to a mel (t=1) the way IndexTTS-2's s2mel
stage does (25 Euler steps, guidance rate 0.7 on a doubled batch: ``cited("indextts2.diffusion_steps")``,
``cited("indextts2.inference_cfg_rate")``); ``synthesize`` runs the sampler then the vocoder, with
the stages resident or offloaded one at a time; ``FlowTTS`` puts text in front of it for the panel.
The models are in ``colab_tts.flow_model`` (re-exported here); notebook 03's sweeps, verdicts and
plots are in ``colab_tts.lessons.diffusion_8gb``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ._checks import positive
from .cited import value
from .devices import resolve_device
from .errors import oom_advice
from .flow_model import (  # noqa: F401  (re-exported: colab_tts.flow.DiT etc. stay importable)
    BIGVGAN_V2_22K,
    INDEXTTS2_DIT,
    PRECISIONS,
    SMALL_DIT,
    SMALL_VOCODER,
    DiT,
    DiTConfig,
    Vocoder,
    VocoderConfig,
    _norm,
    param_count,
    to_precision,
)
from .memory import model_offload, to_accelerator
from .text import count_tokens

STEPS = value("indextts2.diffusion_steps")
CFG_RATE = value("indextts2.inference_cfg_rate")


@dataclass
class FlowInputs:
    """One utterance's conditioning: semantic features, a reference mel prompt, a style vector, noise."""

    cond: torch.Tensor  # (1, prompt + target frames, content_dim)
    prompt: torch.Tensor  # (1, mel, prompt frames)
    style: torch.Tensor  # (1, style_dim)
    noise: torch.Tensor  # (1, mel, prompt + target frames)

    @property
    def prompt_frames(self) -> int:
        return self.prompt.shape[-1]

    @property
    def target_frames(self) -> int:
        return self.noise.shape[-1] - self.prompt_frames

    def to(self, device) -> FlowInputs:
        return FlowInputs(*(t.to(device) for t in (self.cond, self.prompt, self.style, self.noise)))


def make_inputs(config: DiTConfig, target_frames: int, prompt_frames: int = 32, seed: int = 0) -> FlowInputs:
    """Random conditioning of the right shapes (what the GPT stage and the reference audio would give)."""
    positive(target_frames, "target_frames", integer=True)
    positive(prompt_frames, "prompt_frames", integer=True, allow_zero=True)
    g = torch.Generator().manual_seed(seed)
    total = prompt_frames + target_frames
    return FlowInputs(torch.randn(1, total, config.content_dim, generator=g),
                      torch.randn(1, config.mel_bins, prompt_frames, generator=g),
                      torch.randn(1, config.style_dim, generator=g),
                      torch.randn(1, config.mel_bins, total, generator=g))


@torch.no_grad()
def sample(dit: DiT, inputs: FlowInputs, steps: int = STEPS, cfg_rate: float = CFG_RATE,
           keep_trajectory: bool = False):
    """Euler flow matching from noise (t=0) to mel (t=1); returns the target mel (1, mel, frames).

    Each step runs the estimator once on a doubled batch (conditioned / unconditioned) and mixes
    v = (1 + cfg_rate) * v_cond - cfg_rate * v_uncond, as IndexTTS-2 does. The state is kept in fp32.
    The step reuses nothing from earlier steps, so memory does not grow with ``steps`` - unless
    ``keep_trajectory`` keeps every intermediate mel: then it returns (mel, trajectory).
    """
    positive(steps, "steps", integer=True)
    positive(cfg_rate, "cfg_rate", allow_zero=True)
    p = inputs.prompt_frames
    x = inputs.noise.clone()
    x[..., :p] = 0
    prompt = torch.zeros_like(x)
    prompt[..., :p] = inputs.prompt
    prompt2 = torch.cat([prompt, torch.zeros_like(prompt)])  # the unconditioned half sees no prompt,
    style2 = torch.cat([inputs.style, torch.zeros_like(inputs.style)])  # no style,
    cond2 = torch.cat([inputs.cond, torch.zeros_like(inputs.cond)])  # and no semantic features
    trajectory = [x.clone()] if keep_trajectory else None
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((2,), i * dt, device=x.device)
        v_cond, v_uncond = dit(torch.cat([x, x]), prompt2, t, style2, cond2).chunk(2)
        x = x + dt * ((1 + cfg_rate) * v_cond - cfg_rate * v_uncond)
        x[..., :p] = 0
        if keep_trajectory:
            trajectory.append(x.clone())
    mel = x[..., p:]
    return (mel, trajectory) if keep_trajectory else mel


@torch.no_grad()
def synthesize(dit: DiT, vocoder: Vocoder, inputs: FlowInputs, steps: int = STEPS, cfg_rate: float = CFG_RATE,
               offload: bool = False, device=None):
    """Sampler then vocoder on ``device``; returns (mel, waveform).

    Without ``offload`` both stages are put on the device and stay there (a resident pipeline: call
    ``memory.to_host`` to free them). With ``offload`` one stage at a time is on the device and both
    are back in host memory at the end, so every call pays for the copies.
    """
    device = resolve_device(device)
    if not offload:
        to_accelerator(dit, device)
        to_accelerator(vocoder, device)
        mel = sample(dit, inputs.to(device), steps, cfg_rate)
        return mel, vocoder(mel)
    hooks = model_offload([dit, vocoder], device)
    try:
        mel = sample(dit, inputs.to(device), steps, cfg_rate)
        return mel, vocoder(mel)
    finally:
        hooks.remove()


def speech_seconds(text: str, tokens_per_s: float) -> float:
    """Seconds of speech ``text`` becomes at an assumed speaking rate of ``tokens_per_s``."""
    return count_tokens(text) / positive(tokens_per_s, "tokens_per_s")


# --- the flow stage as a clickable synthesizer (notebook 03's steps panel) ----------------------

FLOW_OOM_ADVICE = (
    "offload idle stages: FlowTTS(..., offload=True) keeps only the running stage on the GPU",
    "half precision weights: flow.to_precision(module, 'float16') halves their memory",
    "shorter chunks: split the text with colab_tts.text.split_text(text, max_tokens=60) and join the parts",
    "fewer steps save time only: the measured peak does not depend on them",
)


class FlowTTS:
    """Text -> mel -> waveform through the flow stage alone: ``synthesize(text, steps=25) -> Speech``.

    Offline there is no GPT stage or reference audio, so the conditioning is random, sized from the
    text at ``tokens_per_s`` (an assumed speaking rate): the audio is noise; time and memory are real.
    A CUDA out-of-memory becomes ``OutOfMemoryAdvice`` listing what helps (``FLOW_OOM_ADVICE``).
    """

    def __init__(self, dit: DiT, vocoder: Vocoder, *, tokens_per_s: float = 4.0, prompt_frames: int = 32,
                 cfg_rate: float = CFG_RATE, offload: bool = False, device=None, seed: int = 0):
        self.dit, self.vocoder = dit, vocoder
        self.tokens_per_s = positive(tokens_per_s, "tokens_per_s")
        self.prompt_frames = positive(prompt_frames, "prompt_frames", integer=True, allow_zero=True)
        self.cfg_rate, self.offload, self.device, self.seed = cfg_rate, offload, device, seed

    def synthesize(self, text: str, steps: int = STEPS):
        from .audio import Speech, Timings

        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty: type a sentence to synthesize")
        positive(steps, "steps", integer=True)
        frames = max(1, math.ceil(speech_seconds(text, self.tokens_per_s) * self.vocoder.config.frames_per_s))
        inputs = make_inputs(self.dit.config, frames, self.prompt_frames, self.seed)
        start = time.perf_counter()
        with oom_advice(f"the flow stage ({steps} steps, {frames} mel frames)", FLOW_OOM_ADVICE):
            _mel, wav = synthesize(self.dit, self.vocoder, inputs, steps, self.cfg_rate, self.offload, self.device)
        wav = wav.float().reshape(-1).cpu()
        return Speech(wav / max(1e-6, float(wav.abs().max())), self.vocoder.config.sample_rate,
                      timings=Timings(generate_s=time.perf_counter() - start), text=text)
