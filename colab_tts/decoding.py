"""The decode loop for the GPT stage, and each speed technique as a few local lines.

- ``Sampling`` + ``sample``: repetition penalty -> top-p -> temperature -> top-k, as GPT-SoVITS does,
  in one function with no host sync (the draw is an exponential race, not ``torch.multinomial``).
- KV caches: ``ConcatCache`` (upstream: ``torch.cat`` every step, the baseline), ``StaticCache``
  (allocated once, written in place; ``fixed_shape=True`` for torch.compile / CUDA graphs) and
  ``NoCache`` (recompute the whole sequence every step; for teaching).
- ``generate``: one loop for any "runner" (prefill -> logits, step(tokens) -> logits, keep(rows));
  ``T2SRunner`` drives ``colab_tts.t2s.T2SModel`` on a left-padded batch, ``HFRunner`` any
  Hugging Face causal LM with its own static or dynamic cache.
- ``decode_segments``: a long text's segments sorted into length buckets and decoded in batches.
- ``prepare_model``: fp16 / bf16 weights (``hardware.resolve_dtype``) or dynamic int8 Linear layers (CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import hardware
from ._checks import choose, fraction, positive
from .t2s import T2SConfig, T2SModel, prefix_mask

CACHES = ("concat", "static", "none")


# --- sampling ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    """Sampling settings; defaults are GPT-SoVITS's (shared/facts.md). ``greedy`` takes the argmax
    after the repetition penalty. EOS cannot be drawn during the first ``min_new_tokens`` steps."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    greedy: bool = False
    min_new_tokens: int = 11
    max_new_tokens: int = 1500
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


# --- KV caches --------------------------------------------------------------------------------------

class ConcatCache:
    """The upstream cache: every step allocates a new K/V one position longer (``torch.cat``)."""

    def __init__(self, n_layer: int):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.length = 0

    def update(self, layer, k, v):
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, n: int):
        self.length += n

    def keep(self, rows):
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]


class StaticCache:
    """K/V buffers allocated once for ``max_len`` positions and written in place.

    By default ``update`` returns views up to the current length (no copies, least attention work).
    ``fixed_shape=True`` returns the whole buffers (positions not yet written are masked by the
    caller) and writes one step at the tensor ``write_pos``: every decode step has the same shapes,
    which is what torch.compile and CUDA graphs need.
    """

    def __init__(self, n_layer, batch, n_head, max_len, head_dim, dtype=torch.float32, device="cpu",
                 fixed_shape: bool = False):
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.batch, self.max_len, self.length, self.fixed_shape = batch, max_len, 0, fixed_shape
        self.write_pos = torch.zeros(1, dtype=torch.long, device=device)
        if fixed_shape:  # CUDA graphs may only mutate tensors at fixed addresses (as HF's StaticCache does)
            for t in self.k + self.v + [self.write_pos]:
                torch._dynamo.mark_static_address(t)

    @classmethod
    def for_model(cls, model: T2SModel, batch: int, max_len: int, fixed_shape: bool = False, dtype=None):
        c = model.config
        dtype = model.dtype if dtype is None else hardware.torch_dtype(dtype)
        return cls(c.n_layer, batch, c.n_head, max_len, c.head_dim, dtype, model.device, fixed_shape)

    def update(self, layer, k, v):
        if self.fixed_shape and k.shape[2] == 1:  # decode steps; the prefill below stays eager
            self.k[layer].index_copy_(2, self.write_pos, k)
            self.v[layer].index_copy_(2, self.write_pos, v)
            return self.k[layer], self.v[layer]
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"StaticCache holds {self.max_len} positions; {end} needed. Allocate a larger max_len.")
        b = self.batch
        self.k[layer][:b, :, self.length:end] = k
        self.v[layer][:b, :, self.length:end] = v
        return self.k[layer][:b, :, :end], self.v[layer][:b, :, :end]

    def advance(self, n: int):
        self.length += n
        self.write_pos.fill_(self.length)

    def keep(self, rows):
        # Compact surviving rows to the front of the same buffers: no reallocation, and only the
        # positions written so far are copied.
        n = self.length
        for buf in self.k + self.v:
            buf[: len(rows), :, :n] = buf[: self.batch, :, :n].index_select(0, rows)
        self.batch = len(rows)


class NoCache:
    """No cache at all: every step recomputes the whole sequence (quadratic; shows what a cache buys)."""

    length = 0

    def update(self, layer, k, v):
        return k, v

    def advance(self, n: int):
        pass

    def keep(self, rows):
        pass


# --- runners: what `generate` drives ------------------------------------------------------------------

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

    def __init__(self, model: T2SModel, segments, prompt, cache: str = "static", max_new_tokens: int = 1500,
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
    audio_rate: float = 25.0  # tokens per second of audio (GPT-SoVITS semantic tokens: 25)

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


def generate(runner, sampling: Sampling = Sampling(), eos_id: int | None = None, max_new_tokens=None,
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
        _sync(device)
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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- a long text: buckets of segments -------------------------------------------------------------------

def length_buckets(lengths, batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped longest first into batches of at most ``batch_size``.

    Neighbours in length share a batch, so left padding and rows idling at the end stay small.
    """
    positive(batch_size, "batch_size", integer=True)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def decode_segments(model: T2SModel, segments, prompt, sampling: Sampling = Sampling(), cache: str = "static",
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
    if progress:
        from tqdm.auto import tqdm
        buckets = tqdm(buckets, desc=f"buckets of {batch_size}")
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


# --- measuring ----------------------------------------------------------------------------------------------

def time_decode(model: T2SModel, segments, prompt, cache: str = "static", n_tokens: int = 32,
                warmup: int = 2, **runner_kwargs) -> Generation:
    """Greedy decode of ``segments`` as one batch, every row to ``n_tokens`` (EOS blocked), timed.

    ``warmup`` steps run first on an identical runner so that first-call costs are not timed.
    """
    def run(steps):
        runner = T2SRunner(model, segments, prompt, cache, max_new_tokens=n_tokens, **runner_kwargs)
        return generate(runner, FIXED_LENGTH, model.config.eos_id, steps)

    if warmup:
        run(warmup)
    return run(n_tokens)


def speed_row(technique: str, g: Generation, baseline: Generation | None = None, decode_only: bool = True) -> dict:
    """One row of a results table: tokens/s, speed-up over ``baseline``, real-time factor."""
    rate = (lambda x: x.decode_tokens_per_s) if decode_only else (lambda x: x.tokens_per_s)
    row = {"technique": technique, "tokens": g.n_tokens, "tokens/s": rate(g)}
    row["speed-up"] = rate(g) / rate(baseline) if baseline is not None else 1.0
    row["RTF"] = g.audio_rate / rate(g) if decode_only else g.real_time_factor
    return row


def time_sampling(settings: dict, vocab: int = 1025, batch: int = 1, repeats: int = 200, seed: int = 0) -> list[dict]:
    """Microseconds per ``sample`` call for each named ``Sampling`` on random (batch, vocab) logits."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g)
    seen = torch.rand(batch, vocab, generator=g) < 0.05
    rows = []
    for name, s in settings.items():
        sample(logits, seen, s, vocab - 1, False, g)
        t0 = time.perf_counter()
        for _ in range(repeats):
            sample(logits, seen, s, vocab - 1, False, g)
        rows.append({"sampling": name, "us per token": (time.perf_counter() - t0) / repeats * 1e6})
    return rows


def roofline_rows(gpus, dtype: str = "float16", config: T2SConfig | None = None, context: int = 500) -> list[dict]:
    """Batch-1 decode ceiling of the GPT stage on each GPU: bandwidth / bytes read per token.

    Bytes per token = the weights in ``dtype`` plus the K/V of ``context`` cached positions.
    """
    config = T2SConfig() if config is None else config
    with torch.device("meta"):  # sizes only: no weights are allocated
        model = T2SModel(config).to(hardware.torch_dtype(dtype))
    weights = weight_bytes_per_token(model, dtype)
    kv = context * model.kv_bytes_per_position()
    rows = []
    for name in gpus:
        gpu = hardware.get_gpu(name)
        ceiling = hardware.decode_ceiling_tokens_per_s(weights, gpu, kv)
        rows.append({"GPU": gpu.name, "GB/s": gpu.bandwidth_gbs, "MB per token": (weights + kv) / 1e6,
                     "ceiling tokens/s": ceiling, "x real time": ceiling / config.tokens_per_second})
    return rows


# --- weights: dtype and int8 ------------------------------------------------------------------------------

def prepare_model(model: T2SModel, dtype="float32", device=None, gpu=None) -> tuple[T2SModel, str]:
    """Move ``model`` to ``device`` in ``dtype`` ("float32", "float16", "bfloat16", "auto" or "int8").

    Floating dtypes go through ``hardware.resolve_dtype`` for the GPU in use (bf16 on a T4 becomes
    fp16). "int8" is PyTorch's dynamic quantization of every Linear layer (int8 weights, activations
    quantized on the fly): CPU only. Returns the model and the reason for the dtype.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, str) and dtype.strip().lower() == "int8":
        if device.type != "cpu":
            raise ValueError("dtype='int8' (dynamic quantization) runs on the CPU only; on a GPU use 'auto'")
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            model = quantize_dynamic(model.float().to(device), {torch.nn.Linear}, dtype=torch.qint8)
        return model, "int8: dynamic quantization of the Linear layers (CPU, lossy: tokens may differ)"
    if gpu is None and device.type == "cuda":
        gpu = hardware.detect().gpu
    choice = hardware.resolve_dtype(dtype, gpu if device.type == "cuda" else None)
    return model.to(device=device, dtype=hardware.torch_dtype(choice.dtype)), choice.reason


def cpu_low_precision() -> dict:
    """What this CPU offers for lower precision, as PyTorch's oneDNN backend sees it."""
    mkldnn = torch.ops.mkldnn
    return {"instruction set": torch.backends.cpu.get_cpu_capability(),
            "native bfloat16 (AVX512-BF16/AMX)": bool(mkldnn._is_mkldnn_bf16_supported()),
            "native float16 (AVX512-FP16/AMX)": bool(mkldnn._is_mkldnn_fp16_supported()),
            "int8 dynamic quantization engine": torch.backends.quantized.engine}


def compiled_step(model: T2SModel):
    """``model.decode_step`` under torch.compile: with CUDA graphs ("reduce-overhead") on a GPU.

    Use it with ``fixed_shape=True`` (a static cache whose every step has the same shapes).
    The first calls compile (seconds to minutes); only later steps are faster.
    """
    mode = "reduce-overhead" if model.device.type == "cuda" else "default"
    return torch.compile(model.decode_step, mode=mode, dynamic=False)


def weight_bytes_per_token(model: T2SModel, dtype: str) -> int:
    """Bytes of weights one decode step reads in ``dtype`` (the roofline's numerator; int8: 1 byte)."""
    size = 1 if dtype == "int8" else hardware.DTYPE_BYTES[hardware.dtype_name(dtype)]
    return model.decode_param_count() * size
