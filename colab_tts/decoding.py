"""The decode loop: a sampler, one ``generate`` loop for any runner, and length buckets.

- ``Sampling`` + ``sample``: repetition penalty -> top-p -> temperature -> top-k, in GPT-SoVITS's order
  (``logits_to_probs`` in RVC-Boss/GPT-SoVITS GPT_SoVITS/AR/models/utils.py @48b1a01), in one function
  with no host sync (the draw is an exponential race, not ``torch.multinomial``).
- ``generate``: drives a runner (``start()`` -> logits, ``step(tokens)`` -> logits, ``keep(rows)``);
  finished rows leave the batch. ``colab_tts.t2s_runner.T2SRunner`` is the GPT-SoVITS runner;
  ``HFRunner`` drives any Hugging Face causal LM with its own static or dynamic cache.
- ``length_buckets``: a long text's segments grouped by length into batches.

The caches are in ``colab_tts.decode_caches``; each speed technique is its own transform
(``colab_tts.precision``: dtype and int8 weights; ``colab_tts.compiled``: the compiled step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import devices
from ._checks import choose, fraction, positive
from .cited import value

# --- sampling ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    """Sampling settings; defaults are GPT-SoVITS's ``TTS.run()`` defaults and decode limits (each read
    from ``colab_tts/data/cited/gpt_sovits.json`` with its source). ``greedy`` takes the argmax after the
    repetition penalty. EOS cannot be drawn during the first ``min_new_tokens`` steps."""

    top_k: int = value("gpt_sovits.top_k")
    top_p: float = value("gpt_sovits.top_p")
    temperature: float = value("gpt_sovits.temperature")
    repetition_penalty: float = value("gpt_sovits.repetition_penalty")
    greedy: bool = False
    min_new_tokens: int = value("gpt_sovits.eos_blocked_steps")
    max_new_tokens: int = value("gpt_sovits.max_decode_steps")
    seed: int | None = None

    def __post_init__(self):
        positive(self.top_k, "top_k", integer=True)
        fraction(self.top_p, "top_p")
        positive(self.temperature, "temperature")
        positive(self.repetition_penalty, "repetition_penalty")
        positive(self.min_new_tokens, "min_new_tokens", integer=True, allow_zero=True)
        positive(self.max_new_tokens, "max_new_tokens", integer=True)
        if self.seed is not None:
            positive(self.seed, "seed", integer=True, allow_zero=True)


DEFAULT = Sampling()  # GPT-SoVITS's own settings
GREEDY = Sampling(greedy=True)
# Random weights never decide to stop: block EOS so every row runs to its cap (benchmarks, tests).
FIXED_LENGTH = Sampling(greedy=True, min_new_tokens=10**6)


def sample(logits, seen, s: Sampling, eos_id: int | None = None, block_eos: bool = False, generator=None):
    """Next token per row from (B, V) logits; ``seen`` (B, V) bool marks tokens already in the row.

    Returns (tokens, argmax) as (B,) tensors; upstream also stops a row when the argmax is EOS.
    No ``.item()`` and no ``torch.multinomial``: nothing here waits for the device.
    """
    logits = logits.float()
    if s.repetition_penalty != 1.0:
        penalized = torch.where(logits < 0, logits * s.repetition_penalty, logits / s.repetition_penalty)
        logits = torch.where(seen, penalized, logits)
    if block_eos and eos_id is not None:
        logits = logits.clone()
        logits[:, eos_id] = float("-inf")
    best = logits.argmax(-1)
    if s.greedy:
        return best, best
    if s.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        remove = sorted_logits.softmax(-1).cumsum(-1) > s.top_p
        remove[:, 0] = False  # keep at least the best token
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    logits = logits / s.temperature
    if s.top_k < logits.shape[-1]:
        pivot = logits.topk(s.top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < pivot, float("-inf"))
    probs = logits.softmax(-1)
    race = torch.empty_like(probs).exponential_(generator=generator)  # argmax(p / Exp(1)) ~ Categorical(p)
    return (probs / race).argmax(-1), best


# --- a runner for any Hugging Face causal LM ------------------------------------------------------------

class HFRunner:
    """Any Hugging Face causal LM on a left-padded batch of prompts, with its static or dynamic cache.

    The same ``generate`` loop drives it; finished rows are not dropped here (their cache rows stay),
    they are only ignored.
    """

    def __init__(self, model, prompts, cache: str = "static", max_new_tokens: int = 256, pad_id: int = 0):
        from transformers import DynamicCache
        from transformers import StaticCache as HFStaticCache

        cache = choose(cache, ("static", "dynamic"), "cache")
        if not prompts or not all(len(p) for p in prompts):
            raise ValueError("prompts must be a non-empty list of non-empty token-id lists")
        device = model.device
        total = max(len(p) for p in prompts)
        self.model, self.total = model, total
        self.input_ids = torch.tensor([[pad_id] * (total - len(p)) + list(p) for p in prompts], device=device)
        self.attention = torch.tensor([[0] * (total - len(p)) + [1] * len(p) for p in prompts], device=device)
        self.history = [list(p) for p in prompts]
        self.cache = (HFStaticCache(config=model.config, max_cache_len=total + max_new_tokens) if cache == "static"
                      else DynamicCache(config=model.config))
        self.batch, self.fed, self.can_drop = len(prompts), 0, False

    def _forward(self, ids, positions, cache_position):
        out = self.model(input_ids=ids, attention_mask=self.attention, position_ids=positions,
                         past_key_values=self.cache, cache_position=cache_position, use_cache=True)
        return out.logits[:, -1].float()

    def start(self):
        positions = (self.attention.cumsum(-1) - 1).clamp(min=0)
        self.next_pos = positions[:, -1:] + 1
        return self._forward(self.input_ids, positions, torch.arange(self.total, device=self.input_ids.device))

    def step(self, tokens):
        self.attention = F.pad(self.attention, (0, 1), value=1)
        positions, self.next_pos = self.next_pos, self.next_pos + 1
        cache_position = torch.tensor([self.total + self.fed], device=tokens.device)
        self.fed += 1
        return self._forward(tokens[:, None], positions, cache_position)

    def keep(self, rows):
        raise NotImplementedError("HFRunner keeps finished rows in the batch")


# --- the loop -----------------------------------------------------------------------------------------

@dataclass
class Generation:
    """Tokens per row (EOS excluded), whether each row hit EOS, and what the run cost."""

    tokens: list[list[int]]
    hit_eos: list[bool]
    seconds: float
    steps: int  # decode steps run (the longest row)
    row_steps: int  # sum over steps of the rows still in the batch: the work actually done
    prefill_seconds: float = 0.0
    audio_rate: float = float(value("gpt_sovits.semantic_tokens_per_second"))  # tokens per second of audio

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    @property
    def tokens_per_s(self) -> float:
        """Tokens kept per second of the whole run, prefill included."""
        return self.n_tokens / self.seconds

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second of the decode loop alone (prefill excluded)."""
        return self.n_tokens / max(self.seconds - self.prefill_seconds, 1e-9)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio these tokens make (at ``audio_rate`` tokens per second)."""
        return self.n_tokens / self.audio_rate

    @property
    def real_time_factor(self) -> float:
        """Compute time / audio time: below 1 is faster than real time."""
        return self.seconds / self.audio_seconds


def generate(runner, sampling: Sampling = DEFAULT, eos_id: int | None = None, max_new_tokens=None,
             sync_every: int = 1) -> Generation:
    """Decode every row of ``runner`` until EOS or its cap (an int, or one per row).

    Finished rows leave the batch (``runner.keep``) at the next check, which happens every
    ``sync_every`` steps: the only host sync of the loop.
    """
    positive(sync_every, "sync_every", integer=True)
    B = runner.batch
    caps = max_new_tokens if max_new_tokens is not None else sampling.max_new_tokens
    caps = [caps] * B if isinstance(caps, int) else list(caps)
    if len(caps) != B or not all(isinstance(c, int) and c > 0 for c in caps):
        raise ValueError(f"max_new_tokens must be a positive int or {B} positive ints (one per row), got {caps}")
    t0 = time.perf_counter()
    generator = None
    with torch.inference_mode():
        logits = runner.start()
        device = logits.device
        devices.sync(device)
        prefill_seconds = time.perf_counter() - t0
        if sampling.seed is not None:
            generator = torch.Generator(device=device).manual_seed(sampling.seed)
        seen = torch.zeros(B, logits.shape[-1], dtype=torch.bool, device=device)  # follows the batch rows
        for i, hist in enumerate(runner.history):
            seen[i, torch.tensor(hist, dtype=torch.long, device=device)] = True
        out = torch.zeros(B, max(caps), dtype=torch.long, device=device)
        end = torch.full((B,), -1, dtype=torch.long, device=device)  # tokens kept per row; -1 = running
        eos_hit = torch.zeros(B, dtype=torch.bool, device=device)
        cap_t = torch.tensor(caps, device=device)
        rows = torch.arange(B, device=device)  # original row of each batch row
        row_steps = 0
        for step in range(max(caps)):
            tok, best = sample(logits, seen, sampling, eos_id, step < sampling.min_new_tokens, generator)
            out[rows, step] = tok
            seen.scatter_(1, tok[:, None], True)
            stop = (cap_t[rows] <= step + 1)
            if eos_id is not None and step >= sampling.min_new_tokens:
                is_eos = (tok == eos_id) | (best == eos_id)
                eos_hit[rows] |= is_eos & (end[rows] < 0)
                stop |= is_eos
            kept = torch.where(eos_hit[rows], step, step + 1)  # EOS itself is not kept
            end[rows] = torch.where((end[rows] < 0) & stop, kept, end[rows])
            row_steps += len(rows)
            if step + 1 == max(caps):
                break
            if (step + 1) % sync_every == 0:
                alive = (end[rows] < 0).nonzero().flatten()  # the host sync
                if len(alive) == 0:
                    break
                if runner.can_drop and len(alive) < len(rows):
                    runner.keep(alive)
                    tok, rows, seen = tok[alive], rows[alive], seen[alive]
            logits = runner.step(tok)
        end = torch.where(end < 0, cap_t, end).tolist()
        tokens = [out[i, :n].tolist() for i, n in enumerate(end)]
    return Generation(tokens, eos_hit.tolist(), time.perf_counter() - t0, step + 1, row_steps, prefill_seconds)


def length_buckets(lengths, batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped longest first into batches of at most ``batch_size``.

    Neighbours in length share a batch, so left padding and rows idling at the end stay small.
    """
    positive(batch_size, "batch_size", integer=True)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
