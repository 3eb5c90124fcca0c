"""Orpheus audio tokens -> SNAC codes -> 24 kHz samples, fast, whole or streamed.

Orpheus writes speech as frames of 7 tokens; each token id carries a SNAC code and its slot
(canopyai/Orpheus-TTS orpheus_tts_pypi/orpheus_tts/decoder.py @835ac7c, ``turn_token_into_id`` and
``convert_to_audio``): ``code = id - 128266 - 4096 * (position mod 7)``, and a frame's 7 codes go to
the 3 SNAC layers as 1/2/4 (layer0 <- f0; layer1 <- f1, f4; layer2 <- f2, f3, f5, f6).
One frame is 2048 samples at 24 kHz, so 82.03 tokens make one second of audio. The figures are read
from ``colab_tts/data/cited/orpheus.json`` and ``snac.json`` with their sources.

Why this is faster than the official decoder (which decodes the last 4 frames every frame and keeps
one): every frame is decoded about once, in chunks of ``chunk_frames`` with ``context_frames`` of
context on each side (the decoder's receptive field is ~2.5 frames), weight norm is folded into
plain weights once, Snake runs in place, and chunks are small enough that their activations stay in
the CPU caches. ``benchmarks/snac_decode.py`` measures it against a faithful re-implementation of the
official decoder (``colab_tts.snac_official``), side by side in one run; its output gives the ratios
on the machine it runs on.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ._checks import positive
from .cited import value

AUDIO_TOKEN_OFFSET = value("orpheus.audio_token_offset")  # first audio token id (<custom_token_10>)
TOKENS_PER_FRAME = value("orpheus.tokens_per_frame")
CODES_PER_SLOT = value("orpheus.codes_per_slot")
SNAC_HUB_ID = value("snac.hub_id_24khz")
SNAC_24KHZ_CONFIG = value("snac.config_24khz")
SAMPLE_RATE = SNAC_24KHZ_CONFIG["sampling_rate"]
HOP_LENGTH = math.prod(SNAC_24KHZ_CONFIG["decoder_rates"])  # samples per latent step (512)
SAMPLES_PER_FRAME = HOP_LENGTH * SNAC_24KHZ_CONFIG["vq_strides"][0]  # one coarse code = one frame (2048)
TOKENS_PER_SECOND = value("orpheus.tokens_per_second")  # 7 x 24000 / 2048 = 82.03 (tests check the sum)

# Chosen from benchmarks/snac_decode.py --explore (CPU time, one thread; it prints the sweep): best trade-off.
DEFAULT_CHUNK_FRAMES = 32
DEFAULT_CONTEXT_FRAMES = 3


# --- tokens <-> codes ---------------------------------------------------------------------------

@dataclass
class SnacCodes:
    """The three SNAC code tensors (shapes (1, F), (1, 2F), (1, 4F)) and what was dropped on the way.

    Iterates as the three tensors, so ``snac.decode(list(codes))`` works. ``invalid_frames`` counts
    frames dropped because a code fell outside 0..4095 (a token in the wrong slot);
    ``dropped_tokens`` the trailing tokens of a partial frame.
    """

    layers: tuple
    invalid_frames: int = 0
    dropped_tokens: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.layers[0].shape[-1])

    @property
    def num_samples(self) -> int:
        return self.num_frames * SAMPLES_PER_FRAME

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.layers[i]


def _as_ids(token_ids) -> np.ndarray:
    if isinstance(token_ids, (str, bytes)):
        raise TypeError("token_ids must be a sequence of integer token ids, not text")
    try:
        import torch

        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    ids = np.asarray(list(token_ids) if not isinstance(token_ids, np.ndarray) else token_ids)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
    return ids.reshape(-1).astype(np.int64)


def tokens_to_frames(token_ids, *, warn: bool = True) -> tuple[np.ndarray, int, int]:
    """Audio token ids -> (F, 7) int64 codes, plus (invalid_frames, dropped_tokens). Vectorized.

    Non-audio ids (text, special tokens) are skipped; positions count audio tokens only, as in the
    official decoder. A trailing partial frame is dropped; frames with a code outside 0..4095 are
    dropped and counted (with a warning), never an error.
    """
    ids = _as_ids(token_ids)
    audio = ids[ids >= AUDIO_TOKEN_OFFSET]
    usable = len(audio) // TOKENS_PER_FRAME * TOKENS_PER_FRAME
    frames = audio[:usable].reshape(-1, TOKENS_PER_FRAME) - AUDIO_TOKEN_OFFSET
    frames = frames - CODES_PER_SLOT * np.arange(TOKENS_PER_FRAME)
    ok = ((frames >= 0) & (frames < CODES_PER_SLOT)).all(axis=1)
    invalid = int((~ok).sum())
    if invalid and warn:
        warnings.warn(f"{invalid} of {len(frames)} audio frames had codes outside 0..4095 "
                      "(tokens in the wrong slot) and were skipped", RuntimeWarning, stacklevel=3)
    return frames[ok], invalid, len(audio) - usable


def frames_to_codes(frames):
    """(F, 7) codes -> [(1, F), (1, 2F), (1, 4F)] int64 tensors in SNAC's layer order."""
    import torch

    f = torch.as_tensor(np.asarray(frames), dtype=torch.long).reshape(-1, TOKENS_PER_FRAME)
    return (f[:, 0].reshape(1, -1), f[:, [1, 4]].reshape(1, -1), f[:, [2, 3, 5, 6]].reshape(1, -1))


def audio_tokens_to_codes(token_ids) -> SnacCodes:
    """Orpheus token ids -> the three SNAC code tensors (a :class:`SnacCodes`)."""
    frames, invalid, dropped = tokens_to_frames(token_ids)
    return SnacCodes(frames_to_codes(frames), invalid, dropped)


def codes_to_audio_tokens(codes) -> list[int]:
    """The inverse of :func:`audio_tokens_to_codes`: three code tensors -> audio token ids."""
    c0, c1, c2 = (np.asarray(c.cpu() if hasattr(c, "cpu") else c).reshape(-1) for c in codes)
    n = len(c0)
    if len(c1) != 2 * n or len(c2) != 4 * n:
        raise ValueError(f"SNAC layers must hold F, 2F and 4F codes; got {len(c0)}, {len(c1)}, {len(c2)}")
    for c in (c0, c1, c2):
        if len(c) and (c.min() < 0 or c.max() >= CODES_PER_SLOT):
            raise ValueError("SNAC codes must lie in 0..4095")
    frames = np.empty((n, TOKENS_PER_FRAME), dtype=np.int64)
    frames[:, 0] = c0
    frames[:, [1, 4]] = c1.reshape(n, 2)
    frames[:, [2, 3, 5, 6]] = c2.reshape(n, 4)
    ids = frames + AUDIO_TOKEN_OFFSET + CODES_PER_SLOT * np.arange(TOKENS_PER_FRAME)
    return ids.reshape(-1).tolist()


# --- the codec ----------------------------------------------------------------------------------

def fold_weight_norm(model):
    """Replace every weight-norm parametrization by its computed weight (in place) and return model.

    SNAC wraps each conv in ``weight_norm``, which recomputes ``g * v / |v|`` on every call; at
    inference the weight never changes, so compute it once.
    """
    import torch
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            weight = module.weight
            if not isinstance(weight, torch.nn.Parameter):  # without grad it comes back a plain tensor,
                del module.weight  # which .to(device) would not move
                module.weight = torch.nn.Parameter(weight, requires_grad=False)
    return model


class InferenceSnake:
    """SNAC's Snake activation ``x + sin(a x)^2 / (a + 1e-9)`` with 1 / (a + 1e-9) computed once and
    the rest done in place: one new tensor per call instead of five (it was ~40 % of decode time here)."""

    @staticmethod
    def swap_into(model):
        import torch
        from snac.layers import Snake1d

        class _Snake(torch.nn.Module):
            def __init__(self, alpha):
                super().__init__()
                self.alpha = torch.nn.Parameter(alpha.detach().clone(), requires_grad=False)
                self.register_buffer("inv_alpha", (self.alpha + 1e-9).reciprocal())

            def forward(self, x):
                y = torch.mul(x, self.alpha)
                return y.sin_().square_().mul_(self.inv_alpha).add_(x)

        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, Snake1d):
                    setattr(module, name, _Snake(child.alpha))
        return model


def build_snac(pretrained: bool = True, *, device=None, noise: bool = True, fold: bool = True, seed: int = 0):
    """The SNAC 24 kHz codec in eval mode.

    ``pretrained=True`` loads hubertsiuzdak/snac_24khz from the hub (Colab). ``pretrained=False`` builds
    the same architecture from its config with random weights (seeded), for offline use: audio is noise.
    ``noise=False`` leaves out SNAC's NoiseBlocks (deterministic output, for comparisons);
    ``fold`` prepares it for inference: folds weight norm (:func:`fold_weight_norm`) and swaps in
    :class:`InferenceSnake`; ``fold=False`` gives the module exactly as the snac package builds it.
    """
    import torch
    from snac import SNAC

    from .devices import resolve_device

    if pretrained:
        model = SNAC.from_pretrained(SNAC_HUB_ID)
        if not noise:
            model = _without_noise(model)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SNAC(**copy.deepcopy(SNAC_24KHZ_CONFIG), noise=noise)
    model = model.eval().requires_grad_(False)
    if fold:
        InferenceSnake.swap_into(fold_weight_norm(model))
    return model.to(resolve_device(device))


def _without_noise(model):
    import torch
    from snac.layers import NoiseBlock

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.Sequential):
            for i, child in enumerate(module):
                if isinstance(child, NoiseBlock):
                    module[i] = torch.nn.Identity()
    return model


def _param(snac):
    return next(snac.parameters())


def decode_frames(frames, snac, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                  context_frames: int = DEFAULT_CONTEXT_FRAMES) -> np.ndarray:
    """(F, 7) codes -> float32 samples, decoding chunks of ``chunk_frames`` with context on each side.

    Each chunk decodes ``context_frames`` extra frames left and right and keeps its middle, so every
    frame sees (almost) the same neighbours as in one call over the whole utterance.
    It runs in the codec's own dtype: ``snac.half()`` on a GPU (or ``.bfloat16()`` on a CPU with AMX)
    decodes in reduced precision.
    """
    import torch

    positive(chunk_frames, "chunk_frames", integer=True)
    positive(context_frames, "context_frames", integer=True, allow_zero=True)
    frames = np.asarray(frames).reshape(-1, TOKENS_PER_FRAME)
    n = len(frames)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    p = _param(snac)
    latent_per_frame = SAMPLES_PER_FRAME // HOP_LENGTH
    with torch.inference_mode():
        codes = [c.to(p.device) for c in frames_to_codes(frames)]
        z = snac.quantizer.from_codes(codes)  # (1, C, 4F): per position, no boundary effects
        out = []
        for start in range(0, n, chunk_frames):
            stop = min(start + chunk_frames, n)
            lo, hi = max(0, start - context_frames), min(n, stop + context_frames)
            y = snac.decoder(z[..., lo * latent_per_frame: hi * latent_per_frame])
            keep = y[0, 0, (start - lo) * SAMPLES_PER_FRAME: (stop - lo) * SAMPLES_PER_FRAME]
            out.append(keep.float().cpu())
        return torch.cat(out).numpy()


def decode_audio(token_ids, snac, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                 context_frames: int = DEFAULT_CONTEXT_FRAMES) -> np.ndarray:
    """Orpheus token ids -> float32 samples at 24 kHz for the whole utterance.

    Non-audio ids are skipped. With SNAC's noise switched off (or the same seed) the result matches
    one ``snac.decode`` call over all codes to within ~1e-6 at the default 3 frames of context
    (tests/test_orpheus_decode.py); the benchmark measures the speed.
    """
    frames, _, _ = tokens_to_frames(token_ids)
    return decode_frames(frames, snac, chunk_frames=chunk_frames, context_frames=context_frames)


def decode_one_call(token_ids, snac) -> np.ndarray:
    """Reference: one ``snac.decode`` over every code of the utterance."""
    import torch

    frames, _, _ = tokens_to_frames(token_ids)
    if len(frames) == 0:
        return np.zeros(0, dtype=np.float32)
    p = _param(snac)
    with torch.inference_mode():
        audio = snac.decode([c.to(p.device) for c in frames_to_codes(frames)])
    return audio[0, 0].float().cpu().numpy()


def stream_audio(token_iter: Iterable[int], snac, *, first_frames: int = 4, group_frames: int = 1,
                 lookahead_frames: int = 1, context_frames: int = 2) -> Iterator[np.ndarray]:
    """Yield float32 audio chunks while tokens arrive.

    The first chunk comes once ``first_frames`` (at most 4) frames are in; after that a chunk every
    ``group_frames`` frames. A frame is emitted only when ``lookahead_frames`` later frames exist, and
    is decoded with ``context_frames`` earlier ones, so each emitted frame sees nearly the neighbours
    it has in :func:`decode_audio`: the stream differs from it only where the missing lookahead
    (~1 frame of the decoder's ~2.5-frame receptive field) would have reached (measured in the tests
    and the benchmark; with 3 frames each side it is equal to float rounding). Per frame it decodes
    context + 1 + lookahead = 4 frames by default, as much as the official decoder, but emits every frame.
    When the tokens end, the rest is flushed with the true end, so the total length is the same.
    """
    import torch

    positive(first_frames, "first_frames", integer=True)
    if first_frames > 4:
        raise ValueError("first_frames must be at most 4 (the first audio should come after <= 4 frames)")
    positive(group_frames, "group_frames", integer=True)
    positive(lookahead_frames, "lookahead_frames", integer=True, allow_zero=True)
    lookahead = min(lookahead_frames, first_frames - 1)
    p = _param(snac)

    def decode(frames, lo, start, stop, hi):
        with torch.inference_mode():
            codes = [c.to(p.device) for c in frames_to_codes(frames[lo:hi])]
            z = snac.quantizer.from_codes(codes)
            y = snac.decoder(z)
        return y[0, 0, (start - lo) * SAMPLES_PER_FRAME: (stop - lo) * SAMPLES_PER_FRAME].float().cpu().numpy()

    pending: list[int] = []
    frames: list[np.ndarray] = []
    emitted = 0
    skipped = 0
    for token in token_iter:
        token = int(token)
        if token < AUDIO_TOKEN_OFFSET:
            continue
        pending.append(token)
        if len(pending) < TOKENS_PER_FRAME:
            continue
        f, invalid, _ = tokens_to_frames(pending, warn=False)
        skipped += invalid
        pending.clear()
        frames.extend(f)
        ready = len(frames) - lookahead
        due = first_frames - lookahead if emitted == 0 else emitted + group_frames
        if len(frames) >= first_frames and ready >= due:
            arr = np.stack(frames)
            lo = max(0, emitted - context_frames)
            yield decode(arr, lo, emitted, ready, len(arr))
            emitted = ready
    if skipped:
        warnings.warn(f"{skipped} streamed frames had codes outside 0..4095 and were skipped", RuntimeWarning, stacklevel=2)
    if emitted < len(frames):
        arr = np.stack(frames)
        yield decode(arr, max(0, emitted - context_frames), emitted, len(arr), len(arr))
