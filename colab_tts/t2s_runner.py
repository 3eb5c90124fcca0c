"""GPT-SoVITS prompt assembly for ``T2SModel``: segments, the left-padded batch, and a long text in buckets.

``T2SRunner`` lays out each row as upstream does ([pad | phonemes + BERT features | reference-audio
semantic prompt], left-padded; RVC-Boss/GPT-SoVITS GPT_SoVITS/AR/models/t2s_model.py @48b1a01,
``infer_panel_batch_infer``) and answers ``colab_tts.decoding.generate``'s three calls: ``start()`` (prefill ->
logits), ``step(tokens)`` (one decode step -> logits) and ``keep(rows)`` (finished rows leave the batch).
``decode_segments`` decodes a long text's segments in length buckets, one batch per bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import devices
from ._checks import choose
from .cited import value
from .decode_caches import CACHES, ConcatCache, NoCache, StaticCache
from .decoding import DEFAULT, Generation, Sampling, generate, length_buckets
from .t2s import T2SModel, prefix_mask

MAX_STEPS = value("gpt_sovits.max_decode_steps")  # upstream's hard cap on decode steps


@dataclass
class Segment:
    """One segment of text for the GPT stage: (T,) phoneme ids and (T, 1024) BERT features."""

    phonemes: torch.Tensor
    bert: torch.Tensor


def random_segments(config, lengths, seed: int = 0) -> list[Segment]:
    """Segments of the given phoneme counts with random ids and features (offline stand-ins)."""
    g = torch.Generator().manual_seed(seed)
    return [Segment(torch.randint(0, config.phoneme_vocab_size, (n,), generator=g),
                    torch.randn(n, config.bert_dim, generator=g)) for n in lengths]


def random_prompt(config, length: int = 50, seed: int = 0) -> torch.Tensor:
    """A reference-audio semantic prompt of ``length`` random codes (EOS excluded)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, config.eos_id, (length,), generator=g)


class T2SRunner:
    """A left-padded batch of segments (each followed by the reference prompt) on a T2SModel.

    As upstream, each segment's phonemes should start with the reference text's phonemes.

    ``cache`` is "concat", "static" or "none"; ``fixed_shape`` (static only) keeps every step the
    same shape for torch.compile; ``step_fn`` replaces ``model.decode_step`` (e.g. its compiled form);
    ``kv_dtype`` (static only) stores K/V, and runs attention, in another dtype than the weights
    (e.g. bfloat16 beside int8 Linear layers on a CPU).
    """

    def __init__(self, model: T2SModel, segments, prompt, cache: str = "static", max_new_tokens: int = MAX_STEPS,
                 fixed_shape: bool = False, step_fn=None, kv_dtype=None):
        cache = choose(cache, CACHES, "cache")
        if not segments:
            raise ValueError("segments is empty; pass at least one Segment")
        if (fixed_shape or kv_dtype is not None) and cache != "static":
            raise ValueError("fixed_shape and kv_dtype need cache='static'")
        self.model, self.kind, self.fixed_shape = model, cache, fixed_shape
        self.step_fn = step_fn or model.decode_step
        device = model.device
        prompt = prompt.to(device)
        with torch.inference_mode():
            rows = [torch.cat([model.embed_text(s.phonemes.to(device), s.bert.to(device)),
                               model.embed_audio(prompt, torch.arange(len(prompt), device=device))]) for s in segments]
        self.text_lens = torch.tensor([len(s.phonemes) for s in segments], device=device)
        self.audio_lens = torch.full_like(self.text_lens, len(prompt))
        lens = [len(r) for r in rows]
        total = max(lens)
        self.prefix = torch.stack([F.pad(r, (0, 0, total - len(r), 0)) for r in rows])  # left padding
        self.padded = min(lens) != total
        self.valid = torch.zeros(len(rows), total + max_new_tokens, dtype=torch.bool, device=device)
        for i, n in enumerate(lens):
            self.valid[i, total - n:] = True  # real prefix positions and every future position
        self.total = total
        self.history = [prompt.tolist()] * len(rows)
        self.generated = torch.zeros(len(rows), 0, dtype=torch.long, device=device)  # only cache="none" keeps it
        self.fed = 0
        self.can_drop = not fixed_shape  # dropping rows changes shapes: a compiled step would recompile
        n_layer = model.config.n_layer
        self.cache = {"concat": lambda: ConcatCache(n_layer),
                      "static": lambda: StaticCache.for_model(model, len(rows), total + max_new_tokens, fixed_shape,
                                                              kv_dtype),
                      "none": NoCache}[cache]()

    @property
    def batch(self) -> int:
        return self.prefix.shape[0]

    def start(self):
        mask = prefix_mask(self.text_lens, self.audio_lens, self.total)
        logits = self.model.prefill(self.prefix, self.cache, mask)
        self.cache.advance(self.total)
        return logits

    def step(self, tokens):
        positions = self.audio_lens + self.fed
        self.fed += 1
        if self.kind == "none":
            self.generated = torch.cat([self.generated, tokens[:, None]], 1)
            steps = torch.arange(self.fed, device=tokens.device)
            x = torch.cat([self.prefix, self.model.embed_audio(self.generated, self.audio_lens[:, None] + steps)], 1)
            mask = prefix_mask(self.text_lens, self.audio_lens + self.fed, self.total + self.fed)
            return self.model.prefill(x, self.cache, mask)
        length = self.cache.length + 1
        if self.fixed_shape:
            mask = (self.valid & (torch.arange(self.valid.shape[1], device=tokens.device) < length))[:, None, None]
        else:
            mask = self.valid[:, None, None, :length] if self.padded else None
        logits = self.step_fn(tokens, positions, self.cache, mask)
        self.cache.advance(1)
        return logits

    def keep(self, rows):
        for name in ("prefix", "text_lens", "audio_lens", "valid", "generated"):
            setattr(self, name, getattr(self, name).index_select(0, rows))
        self.cache.keep(rows)
        self.padded = int((self.text_lens + self.audio_lens).min()) != self.total  # any padding left to mask?


def decode_segments(model: T2SModel, segments, prompt, sampling: Sampling = DEFAULT, cache: str = "static",
                    batch_size: int = 8, max_new_tokens=None, progress: bool = False, **runner_kwargs) -> Generation:
    """Decode every segment of a long text: length buckets of ``batch_size``, one batch per bucket.

    ``batch_size=1, cache="concat"`` is the upstream way (one segment at a time). Tokens come back
    in the segments' order; ``max_new_tokens`` is an int or one cap per segment.
    """
    n = len(segments)
    caps = sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
    caps = [caps] * n if isinstance(caps, int) else list(caps)
    if len(caps) != n:
        raise ValueError(f"max_new_tokens needs one cap per segment ({n}), got {len(caps)}")
    buckets = length_buckets([len(s.phonemes) for s in segments], batch_size)
    buckets = devices.progress(buckets, f"buckets of {batch_size}", show=progress)
    tokens, eos = [None] * n, [False] * n
    seconds = steps = row_steps = prefill = 0
    for bucket in buckets:
        bucket_caps = [caps[i] for i in bucket]
        runner = T2SRunner(model, [segments[i] for i in bucket], prompt, cache, max(bucket_caps), **runner_kwargs)
        g = generate(runner, sampling, model.config.eos_id, bucket_caps)
        for j, i in enumerate(bucket):
            tokens[i], eos[i] = g.tokens[j], g.hit_eos[j]
        seconds, steps, row_steps = seconds + g.seconds, steps + g.steps, row_steps + g.row_steps
        prefill += g.prefill_seconds
    return Generation(tokens, eos, seconds, steps, row_steps, prefill)
