"""The flow-matching stage's models: the DiT velocity estimator and the HiFi-GAN vocoder.

A real-size stand-in for IndexTTS-2's s2mel stage, built from its published configuration:
``DiT`` at hidden 512, 8 heads, depth 13, 80 mel bins (``cited("indextts2.dit_hidden")`` and its
neighbours: IndexTeam/IndexTTS-2 config.yaml), and ``Vocoder``, a HiFi-GAN generator laid out like
BigVGAN v2 22 kHz 80-band. Model code only: the sampling loop is ``colab_tts.flow``, and what
notebook 03 measures lives in ``colab_tts.lessons.diffusion_8gb``.

Weights are random here (no hub offline): the audio is noise; shapes, memory and time are real.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import hardware
from ._checks import choose, positive
from .cited import value

PRECISIONS = ("float32", "float16", "bfloat16")


# --- model: DiT velocity estimator ---------------------------------------------------------------

@dataclass(frozen=True)
class DiTConfig:
    hidden: int = value("indextts2.dit_hidden")
    heads: int = value("indextts2.dit_heads")
    depth: int = value("indextts2.dit_depth")
    mel_bins: int = value("indextts2.mel_bins")
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


INDEXTTS2_DIT = DiTConfig()  # IndexTTS-2's s2mel DiT (the defaults above)
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
    mel_bins: int = value("indextts2.mel_bins")
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


# BigVGAN v2 22 kHz 80-band layout (https://huggingface.co/nvidia/bigvgan_v2_22khz_80band_256x config.json:
# upsample_initial_channel 1536, rates [4,4,2,2,2,2], kernels [8,8,4,4,4,4], resblocks [3,7,11] x [1,3,5]);
# its parameter count is cited("indextts2.bigvgan_v2_params").
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
