"""A real-size stand-in for IndexTTS-2's s2mel stage: DiT estimator, Euler sampler, vocoder.

The model file part: ``DiT`` (the velocity estimator, IndexTTS-2 size by default: hidden 512,
8 heads, depth 13, 80 mel bins; shared/facts.md) and ``Vocoder`` (a HiFi-GAN generator laid out
like BigVGAN v2 22 kHz 80-band). The generate part: ``sample`` (Euler flow matching with
classifier-free guidance) and ``synthesize`` (sampler then vocoder). Then the measurements:
``sweep``, ``chunk_sweep`` and ``recommend_8gb``.

Weights are random here (no hub offline): the audio is noise, the shapes, memory and time are real.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import hardware
from ._checks import choose, fraction, positive
from .display import Table
from .errors import oom_advice
from .memory import MIB, accelerator, model_offload, module_bytes, to_accelerator, to_host, track_peak
from .text import count_tokens, split_text

PRECISIONS = ("float32", "float16", "bfloat16")


# --- model: DiT velocity estimator ---------------------------------------------------------------

@dataclass(frozen=True)
class DiTConfig:
    hidden: int = 512
    heads: int = 8
    depth: int = 13
    mel_bins: int = 80
    content_dim: int = 512  # semantic features per mel frame (after the length regulator)
    style_dim: int = 192  # CAMPPlus speaker/style vector
    mlp_ratio: int = 4
    wavenet_layers: int = 8  # the WaveNet post-net of Seed-VC/IndexTTS-2's DiT
    wavenet_kernel: int = 5

    def __post_init__(self):
        for name in ("hidden", "heads", "depth", "mel_bins", "content_dim", "style_dim", "mlp_ratio",
                     "wavenet_kernel"):
            positive(getattr(self, name), f"DiTConfig.{name}", integer=True)
        positive(self.wavenet_layers, "DiTConfig.wavenet_layers", integer=True, allow_zero=True)
        if self.hidden % self.heads:
            raise ValueError(f"DiTConfig.hidden ({self.hidden}) must be divisible by heads ({self.heads})")


INDEXTTS2_DIT = DiTConfig()  # shared/facts.md: hidden 512, 8 heads, depth 13, 80 mel bins
SMALL_DIT = DiTConfig(hidden=128, heads=4, depth=5, content_dim=128, wavenet_layers=2)  # for CI


def _norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm computed in fp32 whatever the model dtype (fp16 overflows in the variance)."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=1e-6).to(x.dtype)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * 1000 * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class Block(nn.Module):
    """Pre-norm transformer block with adaptive LayerNorm (shift/scale/gate from time + style)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.modulation = nn.Linear(hidden, 6 * hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * hidden, hidden))

    def forward(self, h, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c))[:, None].chunk(6, dim=-1)
        b, n, d = h.shape
        q, k, v = self.qkv(_norm(h) * (1 + scale1) + shift1).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = h + gate1 * self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return h + gate2 * self.mlp(_norm(h) * (1 + scale2) + shift2)


class WaveNet(nn.Module):
    """Gated dilation-1 conv stack conditioned on the time/style vector (the DiT's post-net)."""

    def __init__(self, hidden: int, layers: int, kernel: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden, kernel, padding=kernel // 2) for _ in range(layers))
        self.conds = nn.ModuleList(nn.Linear(hidden, 2 * hidden) for _ in range(layers))
        self.res_skip = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden, 1) for _ in range(layers))

    def forward(self, x, c):  # x: (B, H, T)
        skip = torch.zeros_like(x)
        for conv, cond, res_skip in zip(self.convs, self.conds, self.res_skip):
            a, b = (conv(x) + cond(c)[:, :, None]).chunk(2, dim=1)
            res, s = res_skip(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=1)
            x, skip = x + res, skip + s
        return skip


class DiT(nn.Module):
    """Velocity estimator v(x_t, t | semantic features, reference mel prompt, style)."""

    def __init__(self, config: DiTConfig = INDEXTTS2_DIT):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError("config must be a DiTConfig, e.g. flow.INDEXTTS2_DIT or flow.SMALL_DIT")
        self.config = c = config
        self.x_in = nn.Linear(2 * c.mel_bins, c.hidden)  # noisy mel and prompt mel, stacked
        self.cond_in = nn.Linear(c.content_dim, c.hidden)
        self.time = TimestepEmbedder(c.hidden)
        self.style_in = nn.Linear(c.style_dim, c.hidden)
        self.blocks = nn.ModuleList(Block(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.skips = nn.ModuleList(nn.Linear(2 * c.hidden, c.hidden) for _ in range(c.depth // 2))  # U-ViT
        self.wavenet = WaveNet(c.hidden, c.wavenet_layers, c.wavenet_kernel)
        self.out = nn.Linear(c.hidden, c.mel_bins)
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self, on: bool = True) -> DiT:
        """Recompute each block in backward instead of keeping its activations (saves memory only with grad)."""
        self.gradient_checkpointing = bool(on)
        return self

    def forward(self, x, prompt, t, style, cond):
        """x, prompt: (B, mel, T); t: (B,); style: (B, style_dim); cond: (B, T, content_dim) -> (B, mel, T)."""
        dtype = self.x_in.weight.dtype
        h = self.x_in(torch.cat([x, prompt], dim=1).transpose(1, 2).to(dtype)) + self.cond_in(cond.to(dtype))
        c = self.time(t) + self.style_in(style.to(dtype))
        half, saved = len(self.blocks) // 2, []
        for i, block in enumerate(self.blocks):
            if i > half:
                h = self.skips[i - half - 1](torch.cat([h, saved.pop()], dim=-1))
            if self.gradient_checkpointing:  # applied under no_grad too: that is the claim being measured
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)
            if i < half:
                saved.append(h)
        h = self.wavenet(_norm(h).transpose(1, 2), c).transpose(1, 2)
        return self.out(h).transpose(1, 2).float()


# --- model: vocoder ------------------------------------------------------------------------------

@dataclass(frozen=True)
class VocoderConfig:
    mel_bins: int = 80
    channels: int = 1536  # upsample_initial_channel
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)  # product = hop length 256
    upsample_kernels: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    sample_rate: int = 22050

    def __post_init__(self):
        positive(self.channels, "VocoderConfig.channels", integer=True)
        if len(self.upsample_rates) != len(self.upsample_kernels):
            raise ValueError("VocoderConfig.upsample_rates and upsample_kernels need one entry per stage each")
        if self.channels % 2 ** len(self.upsample_rates):
            raise ValueError(f"VocoderConfig.channels ({self.channels}) must be divisible by "
                             f"{2 ** len(self.upsample_rates)}: each of the {len(self.upsample_rates)} stages halves it")

    @property
    def hop(self) -> int:
        return math.prod(self.upsample_rates)

    @property
    def frames_per_s(self) -> float:
        return self.sample_rate / self.hop


# BigVGAN v2 22 kHz 80-band layout (NVIDIA/BigVGAN configs: upsample_initial_channel 1536, rates
# [4,4,2,2,2,2], kernels [8,8,4,4,4,4], resblocks [3,7,11] x [1,3,5]); its README lists 112M params.
# Ours is the HiFi-GAN generator on that layout (LeakyReLU instead of anti-aliased Snake): the same
# convolutions, so the same weight bytes and activation sizes within a few percent.
BIGVGAN_V2_22K = VocoderConfig()
SMALL_VOCODER = VocoderConfig(channels=64, resblock_kernels=(3,))  # CI size: the same stages, narrower


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2)
                                    for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class Vocoder(nn.Module):
    """HiFi-GAN generator: mel (B, mel, frames) -> waveform (B, frames * hop)."""

    def __init__(self, config: VocoderConfig = BIGVGAN_V2_22K):
        super().__init__()
        if not isinstance(config, VocoderConfig):
            raise TypeError("config must be a VocoderConfig, e.g. flow.BIGVGAN_V2_22K or flow.SMALL_VOCODER")
        self.config = c = config
        self.pre = nn.Conv1d(c.mel_bins, c.channels, 7, padding=3)
        self.ups, self.resblocks = nn.ModuleList(), nn.ModuleList()
        ch = c.channels
        for rate, kernel in zip(c.upsample_rates, c.upsample_kernels):
            self.ups.append(nn.ConvTranspose1d(ch, ch // 2, kernel, rate, padding=(kernel - rate) // 2))
            ch //= 2
            self.resblocks.append(nn.ModuleList(ResBlock(ch, k, c.resblock_dilations) for k in c.resblock_kernels))
        self.post = nn.Conv1d(ch, 1, 7, padding=3)

    def forward(self, mel):
        x = self.pre(mel.to(self.pre.weight.dtype))
        for up, blocks in zip(self.ups, self.resblocks):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(b(x) for b in blocks) / len(blocks)
        return torch.tanh(self.post(F.leaky_relu(x))).squeeze(1).float()


def param_count(module_or_config) -> int:
    """Parameters of a module, or of the model a config describes (built on the meta device: free)."""
    if isinstance(module_or_config, (DiTConfig, VocoderConfig)):
        with torch.device("meta"):
            module_or_config = (DiT if isinstance(module_or_config, DiTConfig) else Vocoder)(module_or_config)
    return sum(p.numel() for p in module_or_config.parameters())


def to_precision(module: nn.Module, precision: str) -> nn.Module:
    """A copy of ``module`` in ``precision`` (norms are computed in fp32 inside the model)."""
    dtype = hardware.torch_dtype(choose(hardware.dtype_name(precision), PRECISIONS, "precision"))
    return copy.deepcopy(module).to(dtype)


# --- generate: Euler flow matching with classifier-free guidance --------------------------------

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
def sample(dit: DiT, inputs: FlowInputs, steps: int = 25, cfg_rate: float = 0.7, keep_trajectory: bool = False):
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
def synthesize(dit: DiT, vocoder: Vocoder, inputs: FlowInputs, steps: int = 25, cfg_rate: float = 0.7,
               offload: bool = False, device=None):
    """Sampler then vocoder on ``device``; returns (mel, waveform).

    Without ``offload`` both stages are put on the device and stay there (a resident pipeline: call
    ``memory.to_host`` to free them). With ``offload`` one stage at a time is on the device and both
    are back in host memory at the end, so every call pays for the copies.
    """
    device = accelerator() if device is None else torch.device(device)
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


# --- measurements -------------------------------------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device=None, separate_timing: bool = True):
    """(result, seconds, peak MiB) of ``fn()``. On the CPU the peak comes from a separate, tracked run
    (the storage counter slows small ops down); ``separate_timing=False`` times the tracked run itself,
    which is fine where each op is large (the real-size model) and halves the time spent."""
    device = accelerator() if device is None else torch.device(device)
    if device.type == "cuda" or not separate_timing:
        _sync(device)
        start = time.perf_counter()
        with track_peak(device) as mem:
            out = fn()
        _sync(device)
        return out, time.perf_counter() - start, mem.peak_mib
    with track_peak(device) as mem:  # first: it also warms up (first-call costs stay out of the timing)
        fn()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, mem.peak_mib


def measure_pipeline(dit: DiT, vocoder: Vocoder, inputs: FlowInputs, steps: int, cfg_rate: float = 0.7,
                     offload: bool = False, device=None, separate_timing: bool = True):
    """(mel, waveform, seconds, peak MiB) of one ``synthesize`` call, the weights on the device included.

    Resident (no offload): the stages are on the device before the timed call, as they are for every
    utterance after the first; their bytes are added to the measured peak. Offload: they start in
    host memory and each call copies them in, which the peak and the time both include.
    """
    device = accelerator() if device is None else torch.device(device)
    resident_mib = 0.0
    if not offload:
        to_accelerator(dit, device)
        to_accelerator(vocoder, device)
        resident_mib = (module_bytes(dit) + module_bytes(vocoder)) / MIB
    try:
        (mel, wav), seconds, peak = measure(lambda: synthesize(dit, vocoder, inputs, steps, cfg_rate, offload, device),
                                            device, separate_timing)
    finally:
        to_host(dit)
        to_host(vocoder)
    return mel, wav, seconds, peak + resident_mib


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS(x - reference) / RMS(reference)."""
    x, reference = x.float().cpu(), reference.float().cpu()
    return float((x - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt().clamp_min(1e-12))


def reference_mel(dit: DiT, inputs: FlowInputs, steps: int = 200, cache: dict | None = None, device=None):
    """The fp32 ``steps``-step solution that errors are measured against; computed once per input."""
    key = (id(dit), steps, inputs.target_frames, inputs.prompt_frames, float(inputs.noise.sum()))
    if cache is not None and key in cache:
        return cache[key]
    device = accelerator() if device is None else torch.device(device)
    with torch.no_grad():
        to_accelerator(dit, device)
        try:
            mel = sample(dit, inputs.to(device), steps).cpu()
        finally:
            to_host(dit)
    if cache is not None:
        cache[key] = mel
    return mel


@dataclass
class Sweep:
    """Rows of measurements with the models they came from (for scaling to real size)."""

    rows: list[dict]
    dit_config: DiTConfig
    vocoder_config: VocoderConfig
    device: str

    def weights_mib(self, real: bool = False) -> dict:
        """fp32 weights of each stage, as measured (``real=False``) or at the real size."""
        dit, voc = (INDEXTTS2_DIT, BIGVGAN_V2_22K) if real else (self.dit_config, self.vocoder_config)
        return {"dit": param_count(dit) * 4 / MIB, "vocoder": param_count(voc) * 4 / MIB}

    def table(self, title: str | None = None) -> Table:
        return Table(self.rows, title=title, digits=3)


def sweep(dit: DiT, vocoder: Vocoder, *, steps=(25,), precisions=("float32",), offload=(False,),
          target_frames=(64,), prompt_frames: int = 32, cfg_rate: float = 0.7, reference_steps: int = 200,
          references: dict | None = None, device=None, progress: bool = True, seed: int = 0,
          separate_timing: bool = True) -> Sweep:
    """Run the whole s2mel stage (sampler + vocoder) over a grid; one row per configuration.

    Columns: steps, precision, offload, frames (target mel frames: the chunk length), audio_s,
    latency_s, peak_mib, error (relative RMS against the fp32 ``reference_steps``-step mel).
    """
    device = accelerator() if device is None else torch.device(device)
    references = {} if references is None else references
    precisions = [choose(hardware.dtype_name(p), PRECISIONS, "precision") for p in precisions]
    grid = [(n, s, p, o) for n in target_frames for p in precisions for o in offload for s in steps]
    rows = []
    models = {}
    for frames, n_steps, precision, off in _progress(grid, progress, "sweep"):
        inputs = make_inputs(dit.config, frames, prompt_frames, seed)
        ref = reference_mel(dit, inputs, reference_steps, references, device)
        if precision not in models:
            models[precision] = (dit, vocoder) if precision == "float32" else (
                to_precision(dit, precision), to_precision(vocoder, precision))
            synthesize(*models[precision], inputs, 1, cfg_rate, True, device)  # warm-up: first calls are slow
        d, v = models[precision]
        with oom_advice(f"the sweep at {n_steps} steps, {precision}, offload={off}, {frames} frames",
                        FLOW_OOM_ADVICE):
            mel, wav, seconds, peak = measure_pipeline(d, v, inputs, n_steps, cfg_rate, off, device,
                                                       separate_timing)
        rows.append({"steps": n_steps, "precision": precision, "offload": off, "frames": frames,
                     "audio_s": wav.shape[-1] / vocoder.config.sample_rate, "latency_s": seconds,
                     "peak_mib": peak, "error": relative_error(mel, ref)})
    return Sweep(rows, dit.config, vocoder.config, str(device))


def seed_sweep(dit: DiT, vocoder: Vocoder, steps=(10, 25, 50), at_steps: int = 25,
               precisions=("float16", "bfloat16"), **kwargs) -> Sweep:
    """The seed's table: fp32 over ``steps`` (part "steps"), then at ``at_steps`` fp32, the half
    precisions and offload on, measured one after another (part "variants").

    On a shared machine the speed drifts over minutes, so each comparison uses rows measured side by
    side: fp32 at ``at_steps`` is measured in both parts. One 200-step reference per input serves all.
    ``kwargs`` go to ``sweep``.
    """
    kwargs.setdefault("references", {})
    result = sweep(dit, vocoder, steps=steps, **kwargs)
    more = sweep(dit, vocoder, steps=(at_steps,), precisions=tuple(dict.fromkeys(("float32", *precisions))),
                 offload=(False, True), **kwargs)
    for part, rows in (("steps", result.rows), ("variants", more.rows)):
        for r in rows:
            r["part"] = part
    result.rows += more.rows
    return result


def trajectory_peaks(dit: DiT, steps=(10, 25, 50), target_frames: int = 64, prompt_frames: int = 32,
                     device=None) -> list[dict]:
    """Peak MiB of the sampler alone, without and with ``keep_trajectory``, for each step count."""
    device = accelerator() if device is None else torch.device(device)
    inputs = make_inputs(dit.config, target_frames, prompt_frames).to(device)
    rows = []
    to_accelerator(dit, device)
    try:
        for n in steps:
            row = {"steps": n}
            for keep in (False, True):
                with track_peak(device) as mem:
                    sample(dit, inputs, n, keep_trajectory=keep)
                row["peak_mib_trajectory" if keep else "peak_mib"] = mem.peak_mib
            rows.append(row)
    finally:
        to_host(dit)
    return rows


def checkpointing_peaks(dit: DiT, target_frames: int = 64, prompt_frames: int = 32, device=None) -> list[dict]:
    """Peak MiB of one estimator call with gradient checkpointing off/on, under no_grad and with grad."""
    device = accelerator() if device is None else torch.device(device)
    inputs = make_inputs(dit.config, target_frames, prompt_frames).to(device)
    t = torch.full((1,), 0.5, device=device)
    args = (inputs.noise, torch.zeros_like(inputs.noise), t, inputs.style, inputs.cond)
    rows = []
    to_accelerator(dit, device)
    try:
        for grad in (False, True):
            for ckpt in (False, True):
                dit.enable_gradient_checkpointing(ckpt)
                with torch.set_grad_enabled(grad), track_peak(device) as mem:
                    out = dit(*args)
                del out
                rows.append({"grad": grad, "checkpointing": ckpt, "peak_mib": mem.peak_mib})
    finally:
        dit.enable_gradient_checkpointing(False)
        to_host(dit)
    return rows


def speech_seconds(text: str, tokens_per_s: float) -> float:
    return count_tokens(text) / tokens_per_s


def chunk_sweep(dit: DiT, vocoder: Vocoder, texts: dict, max_tokens=(40, 120, None), *, steps: int = 10,
                tokens_per_s: float = 4.0, prompt_frames: int = 32, device=None, progress: bool = True,
                separate_timing: bool = True) -> list[dict]:
    """Peak memory and time to synthesise long texts split into chunks of at most ``max_tokens``.

    Each chunk's length in mel frames is its token count / ``tokens_per_s`` seconds of speech at the
    vocoder's frame rate (an assumed speaking rate, stated in the rows); ``None`` means no split.
    Peak is the largest over the chunks (they run one after another); latency is the sum.
    """
    positive(tokens_per_s, "tokens_per_s")
    device = accelerator() if device is None else torch.device(device)
    fps = vocoder.config.frames_per_s
    rows = []
    for name, text in texts.items():
        for limit in _progress(max_tokens, progress, name):
            chunks = split_text(text, limit) if limit else [text.strip()]
            frames = [max(1, round(speech_seconds(c, tokens_per_s) * fps)) for c in chunks]
            peak, seconds = 0.0, 0.0
            for n in frames:
                inputs = make_inputs(dit.config, n, prompt_frames)
                *_, s, p = measure_pipeline(dit, vocoder, inputs, steps, device=device, separate_timing=separate_timing)
                peak, seconds = max(peak, p), seconds + s
            rows.append({"text": name, "max_tokens": limit or "no split", "chunks": len(chunks),
                         "longest_s": max(frames) / fps, "total_s": sum(frames) / fps,
                         "latency_s": seconds, "peak_mib": peak})
    return rows


def _progress(items, show, desc):
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


def stage_activations(dit: DiT, vocoder: Vocoder, target_frames: int = 64, prompt_frames: int = 32,
                      steps: int = 4, device=None) -> dict:
    """Activation peak (weights already on the device, not counted) of each stage, in MiB per second of audio."""
    device = accelerator() if device is None else torch.device(device)
    inputs = make_inputs(dit.config, target_frames, prompt_frames).to(device)
    audio_s = target_frames / vocoder.config.frames_per_s
    out = {}
    for name, module in (("dit", dit), ("vocoder", vocoder)):
        to_accelerator(module, device)
        try:
            with torch.no_grad(), track_peak(device) as mem:
                if name == "dit":
                    mel = sample(dit, inputs, steps)
                else:
                    vocoder(mel)
        finally:
            to_host(module)
        out[name] = mem.peak_mib / audio_s
    return out


# --- the 8 GB recipe ----------------------------------------------------------------------------

GB = 1e9
PCIE3_X16_GBS = 8 * 16 * 128 / 130 / 8  # 15.75 GB/s: PCIe 3.0 (8 GT/s, 128b/130b) x16, the T4's bus

# Weights of IndexTTS-2's stages at their real size, in fp32 bytes, with where each figure comes from.
INDEXTTS2_WEIGHTS_FP32 = {
    "GPT (UnifiedVoice)": (3.3 * GB, "gpt.pth, 3.3 GB in fp32 (IndexTeam/IndexTTS-2 files, as listed in "
                                     "github.com/hyukudan/index-tts-fork checkpoints/DOWNLOAD.md)"),
    "semantic encoder (w2v-BERT 2.0)": (580.49e6 * 4, "transformers' Wav2Vec2BertModel at its default (= "
                                        "facebook/w2v-bert-2.0) config, counted on the meta device: 580.49 M"),
    "s2mel DiT": (param_count(INDEXTTS2_DIT) * 4, "this module's DiT at hidden 512, depth 13 (shared/facts.md)"),
    "vocoder (BigVGAN v2 22 kHz)": (param_count(BIGVGAN_V2_22K) * 4, "this module's vocoder on BigVGAN v2's layout"),
}
EMOTION_GB = 6.54 - 5.48  # shared/facts.md: half + emotion 6.54 GB, half without 5.48 GB (RTX 4090)
# IndexTTS-2's measured totals, everything resident, short utterance (shared/facts.md, RTX 4090).
# fp32 -> half saves 8.15 - 6.54 = 1.61 GB, half of gpt.pth's 3.3 GB within 3%: we read use_fp16 as
# halving the GPT only (inferred from these numbers, not from infer_v2.py). fp32 without the emotion
# model is not in facts.md: 8.15 minus the emotion model's 1.06 GB.
INDEXTTS2_TOTAL_GB = {("float16", True): 6.54, ("float16", False): 5.48, ("float32", True): 8.15,
                      ("float32", False): 8.15 - EMOTION_GB}


@dataclass
class Recipe:
    gpu: str
    budget_gib: float
    gpt_dtype: str  # IndexTTS-2's use_fp16 switch (the other stages stay in fp32, as there)
    s2mel_dtype: str
    steps: int
    max_text_tokens: int
    offload: bool
    peak_gib: float
    extra_s_per_utterance: float
    reasons: list[str]

    def rows(self) -> list[dict]:
        return [{"setting": k, "value": getattr(self, k)} for k in
                ("gpu", "budget_gib", "gpt_dtype", "s2mel_dtype", "steps", "max_text_tokens", "offload", "peak_gib",
                 "extra_s_per_utterance")]

    def __str__(self) -> str:
        head = (f"{self.gpu}: GPT in {self.gpt_dtype}, s2mel in {self.s2mel_dtype}, {self.steps} steps, chunks of "
                f"{self.max_text_tokens} tokens, offload {'on' if self.offload else 'off'}; "
                f"peak ~{self.peak_gib:.2f} GiB of {self.budget_gib:.2f} planned; "
                f"+{self.extra_s_per_utterance:.2f} s per utterance")
        return "\n".join([head] + [f"- {r}" for r in self.reasons])


def _rows(sweep_result, part: str | None = None, **match):
    """Rows matching ``match``; with ``part``, only that part of a ``seed_sweep`` (plain sweeps have none)."""
    return [r for r in sweep_result.rows if all(r.get(k) == v for k, v in match.items())
            and (part is None or r.get("part", part) == part)]


def recommend_8gb(gpu, measured: Sweep, activations: dict | None = None, *, emotion: bool = True,
                  headroom: float = 0.9, max_text_tokens: int = 120, tokens_per_s: float = 4.0,
                  error_tolerance: float = 0.01) -> Recipe:
    """An IndexTTS-2 configuration for ``gpu`` derived from ``measured`` (a ``sweep`` result), with reasons.

    Memory: IndexTTS-2's measured resident totals (shared/facts.md) plus the activations of one chunk of
    ``max_text_tokens`` tokens (``tokens_per_s`` of speech a second), measured per second of audio by
    ``stage_activations`` and scaled from the measured widths to the real ones. Offloaded peak: the
    largest real stage (``INDEXTTS2_WEIGHTS_FP32``) plus what the totals hold beyond the weights, plus
    the chunk's activations. ``headroom``: the share of the card to plan for (the rest: CUDA context,
    fragmentation). Half precision is chosen where the measured error it adds stays below
    ``error_tolerance``.
    """
    spec = hardware.get_gpu(gpu)
    budget = spec.memory_gib * fraction(headroom, "headroom")
    positive(max_text_tokens, "max_text_tokens", integer=True)
    positive(tokens_per_s, "tokens_per_s")
    reasons = []
    steps_rows = sorted(_rows(measured, "steps", precision="float32", offload=False), key=lambda r: r["steps"])
    if not steps_rows:
        raise ValueError("measured must hold fp32 rows without offload: run sweep(..., precisions=('float32', ...))")
    frames = steps_rows[0]["frames"]
    by_steps = {r["steps"]: r for r in steps_rows if r["frames"] == frames}
    steps = min(by_steps, key=lambda s: abs(s - 25))  # IndexTTS-2's 25, or the nearest measured
    base = by_steps[steps]

    half = hardware.pick_dtype(spec)
    half_rows = _rows(measured, precision=half, steps=steps, offload=False, frames=frames)
    gpt_dtype = "float32"
    if half == "float32":
        reasons.append(f"fp32: {spec.name} has no usable half precision")
    elif not half_rows:
        reasons.append(f"{half} not measured: staying in fp32")
    else:
        added = half_rows[0]["error"] - base["error"]
        if added <= error_tolerance:
            gpt_dtype = half
            switch = "use_fp16=True" if half == "float16" else "use_fp16=True gives float16; bfloat16 is the same size"
            reasons.append(f"GPT in {half} ({switch}): measured error {half_rows[0]['error']:.4f} vs "
                           f"{base['error']:.4f} in fp32 at {steps} steps; saves 1.61 GB (shared/facts.md)")
        else:
            reasons.append(f"fp32: {half} added {added:.4f} to the measured error (tolerance {error_tolerance})")
        if half == "float16" and not spec.bf16:
            reasons.append(f"{spec.name} is CC {spec.cc}: float16, not bfloat16")
    reasons.append(f"s2mel DiT kept in fp32 as IndexTTS-2 does: {INDEXTTS2_WEIGHTS_FP32['s2mel DiT'][0] / MIB:.0f} "
                   f"MiB of weights")

    weights = {k: v for k, (v, _) in INDEXTTS2_WEIGHTS_FP32.items()}
    if gpt_dtype != "float32":
        weights["GPT (UnifiedVoice)"] /= 2
    if emotion:
        weights["emotion model"] = EMOTION_GB * GB
    total = INDEXTTS2_TOTAL_GB[("float32" if gpt_dtype == "float32" else "float16", emotion)] * GB
    rest = max(0.0, total - sum(weights.values()))
    reasons.append(f"the stage weights add up to {sum(weights.values()) / GB:.2f} GB of IndexTTS-2's measured "
                   f"{total / GB:.2f} GB; the other {rest / GB:.2f} GB (activations, CUDA context) stays in every plan")

    chunk_s = max_text_tokens / tokens_per_s
    act = 0.0
    if activations:
        dit_scale = INDEXTTS2_DIT.hidden / measured.dit_config.hidden
        voc_scale = BIGVGAN_V2_22K.channels / measured.vocoder_config.channels
        act = max(activations["dit"] * dit_scale, activations["vocoder"] * voc_scale) * chunk_s * MIB
        reasons.append(f"a {max_text_tokens}-token chunk (~{chunk_s:g} s of speech) adds {act / MIB:.0f} MiB of s2mel "
                       f"activations: measured {activations['dit']:.2f} (DiT) / {activations['vocoder']:.2f} "
                       f"(vocoder) MiB per s, scaled x{dit_scale:g} / x{voc_scale:g} to the real widths")

    peaks = [r["peak_mib"] for r in steps_rows if r["frames"] == frames]
    reasons.append(f"steps do not buy memory: measured peak {min(peaks):.2f}-{max(peaks):.2f} MiB over "
                   f"{min(by_steps)}-{max(by_steps)} steps; keeping {steps} (error {base['error']:.4f})")
    fewest = min(by_steps)
    if fewest != steps:
        saved = 1 - by_steps[fewest]["latency_s"] / base["latency_s"]
        reasons.append(f"{fewest} steps would save {saved:.0%} of the s2mel time at error "
                       f"{by_steps[fewest]['error']:.4f}")

    resident = (total + act) / hardware.GIB
    largest = max(weights, key=weights.get)
    offloaded = (weights[largest] + rest + act) / hardware.GIB
    extra = 0.0
    if resident <= budget:
        offload, peak = False, resident
        reasons.append(f"everything resident: ~{resident:.2f} GiB fits the {budget:.2f} GiB planned: no offload, "
                       f"no extra time")
    else:
        offload, peak = True, offloaded
        moved = sum(weights.values())
        extra = 2 * moved / (PCIE3_X16_GBS * GB)
        reasons.append(f"resident needs ~{resident:.2f} GiB > {budget:.2f} GiB: one stage at a time, peak "
                       f"~{offloaded:.2f} GiB (largest stage: {largest}); costs ~{extra:.2f} s per utterance to "
                       f"copy {moved / GB:.1f} GB in and out at PCIe 3.0 x16's {PCIE3_X16_GBS:.2f} GB/s")
        if offloaded > budget:
            reasons.append(f"even one stage at a time needs ~{offloaded:.2f} GiB: {spec.name} is too small")
    reasons.append(f"text in chunks of {max_text_tokens} tokens (IndexTTS-2's default): the peak follows the "
                   f"longest chunk, not the text")
    return Recipe(spec.name, round(budget, 2), gpt_dtype, "float32", steps, max_text_tokens, offload,
                  round(peak, 2), round(extra, 2), reasons)


# --- plots --------------------------------------------------------------------------------------

def plot_steps(result: Sweep, precision: str = "float32"):
    """Latency, peak memory and error against steps: the seed's table, measured."""
    import matplotlib.pyplot as plt

    rows = sorted(_rows(result, "steps", precision=precision, offload=False), key=lambda r: r["steps"])
    steps = [r["steps"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("latency_s", "peak_mib", "error"),
                              ("latency (s)", "peak memory (MiB)", "error vs 200-step reference")):
        ax.plot(steps, [r[key] for r in rows], "o-")
        ax.set_xlabel("Euler steps")
        ax.set_ylabel(label)
    axes[1].set_ylim(0, max(r["peak_mib"] for r in rows) * 1.2)
    axes[2].set_yscale("log")
    fig.suptitle(f"s2mel stage on {result.device}, {precision}: time grows with steps, memory does not")
    fig.tight_layout()
    return fig


def plot_bars(rows: list[dict], label_keys, value_keys, title: str):
    """One bar chart per value column, one bar per row (labelled by ``label_keys``)."""
    import matplotlib.pyplot as plt

    def label(r):  # booleans read as "offload" / "no offload"
        return ", ".join((k if r[k] else f"no {k}") if isinstance(r[k], bool) else str(r[k]) for k in label_keys)

    labels = [label(r) for r in rows]
    fig, axes = plt.subplots(1, len(value_keys), figsize=(5 * len(value_keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], value_keys):
        ax.barh(labels, [r[key] for r in rows], color="tab:blue")
        ax.set_xlabel(key)
        ax.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- the seed's claims, each against its measurement ----------------------------------------------

def _verdict(holds: bool, claim: str, evidence: str) -> str:
    return f"{'CONFIRMED' if holds else 'REFUTED'}: {claim} -> {evidence}"


def claim_steps(result: Sweep, precision: str = "float32") -> list[str]:
    """'Cutting steps cuts peak memory (7.9 GB at 100 -> 4.9 GB at 20)' and 'cutting steps cuts time'."""
    rows = sorted(_rows(result, "steps", precision=precision, offload=False), key=lambda r: r["steps"])
    lo, hi = rows[0], rows[-1]
    change = hi["peak_mib"] / lo["peak_mib"] - 1
    per_step = [(r["latency_s"] / r["steps"]) for r in rows]
    return [
        _verdict(abs(change) > 0.05, "fewer diffusion steps need less peak memory (seed: 4.9 GB at 20 vs 7.9 GB at 100)",
                 f"peak {lo['peak_mib']:.2f} MiB at {lo['steps']} steps, {hi['peak_mib']:.2f} MiB at {hi['steps']} "
                 f"({change:+.1%})"),
        _verdict(hi["latency_s"] > 1.5 * lo["latency_s"], "fewer steps take less time",
                 f"{lo['latency_s']:.2f} s at {lo['steps']} steps, {hi['latency_s']:.2f} s at {hi['steps']} "
                 f"({min(per_step):.3f}-{max(per_step):.3f} s per step incl. the vocoder)"),
    ]


def claim_precision(result: Sweep, half: str, steps: int) -> str:
    """'Use fp16/bf16': less memory at (almost) the same output."""
    fp32 = _rows(result, "variants", precision="float32", offload=False, steps=steps)[0]
    low = _rows(result, "variants", precision=half, offload=False, steps=steps)[0]
    ratio = low["peak_mib"] / fp32["peak_mib"]
    return _verdict(ratio < 0.75 and low["error"] < 2 * fp32["error"] + 0.01, f"{half} cuts memory at the same quality",
                    f"peak {low['peak_mib']:.2f} vs {fp32['peak_mib']:.2f} MiB (x{ratio:.2f}); error "
                    f"{low['error']:.4f} vs {fp32['error']:.4f} against the fp32 reference")


def claim_checkpointing(rows: list[dict]) -> list[str]:
    """'Gradient checkpointing saves 1.2 GB' - at inference (no_grad) and with grad."""
    peak = {(r["grad"], r["checkpointing"]): r["peak_mib"] for r in rows}
    out = []
    for grad, where in ((False, "at inference (no_grad)"), (True, "with grad (training)")):
        off, on = peak[(grad, False)], peak[(grad, True)]
        saved = 1 - on / off
        out.append(_verdict(saved > 0.05, f"gradient checkpointing saves memory {where}",
                            f"{off:.2f} MiB without, {on:.2f} MiB with ({saved:+.0%} saved)"))
    return out


def claim_trajectory(rows: list[dict]) -> str:
    """The one case where memory does grow with steps: keeping every intermediate mel."""
    lo, hi = rows[0], rows[-1]
    grew = hi["peak_mib_trajectory"] - lo["peak_mib_trajectory"]
    return _verdict(grew > 0.05 * lo["peak_mib_trajectory"], "memory grows with steps when the trajectory is kept",
                    f"{lo['peak_mib_trajectory']:.2f} MiB at {lo['steps']} steps, {hi['peak_mib_trajectory']:.2f} MiB "
                    f"at {hi['steps']} (without keeping it: {lo['peak_mib']:.2f} and {hi['peak_mib']:.2f})")


def claim_offload(result: Sweep, steps: int) -> str:
    """'Offload idle modules to the CPU': the peak drops by the idle stage's weights, paid in time."""
    on = _rows(result, "variants", precision="float32", offload=True, steps=steps)[0]
    off = _rows(result, "variants", precision="float32", offload=False, steps=steps)[0]
    idle, real = min(result.weights_mib().values()), result.weights_mib(real=True)
    saved = off["peak_mib"] - on["peak_mib"]
    return _verdict(saved >= 0.9 * idle, "offloading idle stages lowers peak memory (by the idle stage's weights)",
                    f"peak {on['peak_mib']:.2f} vs {off['peak_mib']:.2f} MiB: {saved:.2f} MiB saved, the smaller stage "
                    f"holds {idle:.2f} MiB at this width (at real size: {min(real.values()):.0f} of "
                    f"{sum(real.values()):.0f} MiB); latency {on['latency_s']:.2f} vs {off['latency_s']:.2f} s")


def claim_chunks(rows: list[dict]) -> list[str]:
    """'Synthesise long text in chunks': peak follows the longest chunk."""
    out = []
    for name in dict.fromkeys(r["text"] for r in rows):
        mine = [r for r in rows if r["text"] == name]
        whole = next(r for r in mine if r["chunks"] == 1 or r["max_tokens"] == "no split")
        best = min(mine, key=lambda r: r["peak_mib"])
        out.append(_verdict(best["peak_mib"] < 0.95 * whole["peak_mib"], f"chunking long text lowers peak memory ({name})",
                            f"{best['peak_mib']:.2f} MiB in {best['chunks']} chunks of <= {best['max_tokens']} tokens vs "
                            f"{whole['peak_mib']:.2f} MiB unsplit; time {best['latency_s']:.2f} vs "
                            f"{whole['latency_s']:.2f} s"))
    return out


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
                 cfg_rate: float = 0.7, offload: bool = False, device=None, seed: int = 0):
        self.dit, self.vocoder = dit, vocoder
        self.tokens_per_s = positive(tokens_per_s, "tokens_per_s")
        self.prompt_frames = positive(prompt_frames, "prompt_frames", integer=True, allow_zero=True)
        self.cfg_rate, self.offload, self.device, self.seed = cfg_rate, offload, device, seed

    def synthesize(self, text: str, steps: int = 25):
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
