"""Orpheus-TTS (canopylabs/orpheus-3b-0.1-ft): a Llama-3.2-3B that writes SNAC audio tokens.

The fixes that make it run on a Colab T4 (figures and sources: colab_tts/data/cited/orpheus.json):
- dtype through ``hardware.resolve_dtype`` on the compute capability: float16 on a T4 (no bfloat16
  below CC 8.0), passed to vLLM as ``dtype="float16"`` with the TRITON_ATTN attention backend (vLLM >= 0.24
  gives FlashInfer a minimum of SM80, vllm PRs #45375 and #47949; FlashAttention-2 needs SM80 too): the
  planner's rule, ``colab_tts.vllm_versions.below_sm80``;
- ``max_model_len`` from the longest audio wanted (``plan_vllm``), not the 131,072 of the config;
- stop on end of speech (128258, canopyai/Orpheus-TTS realtime_streaming_example/main.py @835ac7c), not
  the 49158 of PyPI orpheus-speech 0.1.0; a fresh request id per request;
- gated weights: one message with the steps (colab_tts.hub), or the non-gated mirror ``"unsloth"``;
- ``backend="auto"``: vLLM where it can run, else transformers, saying why (orpheus_engines.pick_backend).

    tts = OrpheusTTS.from_pretrained()            # Colab GPU, real model (gated: HF_TOKEN)
    tts = OrpheusTTS.from_pretrained("unsloth")   # the same weights from the non-gated mirror
    tts = OrpheusTTS.offline_demo()               # no downloads: tiny random model, audio is noise
    speech = tts.synthesize("Hello there.", voice="tara")
    tts.close()                                   # the GPU memory comes back
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator

import numpy as np

from ._checks import choose, positive
from .audio import Speech, Timings
from .cited import value
from .errors import oom_advice
from .orpheus_engines import (  # noqa: F401  (re-exported)
    BACKENDS,
    END_OF_SPEECH,
    PAD,
    installed_vllm_version,
    pick_backend,
)
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

MODEL_ID = value("orpheus.model_id")
MIRROR_ID = value("orpheus.mirror_id")
WEIGHTS = {"canopylabs": MODEL_ID, "unsloth": MIRROR_ID}  # what notebook 01's WEIGHTS parameter names
END_OF_TEXT = value("orpheus.end_of_text")  # Llama-3 <|eot_id|>
START_OF_SPEECH = value("orpheus.start_of_speech")
START_OF_HUMAN = value("orpheus.start_of_human")
END_OF_HUMAN = value("orpheus.end_of_human")
START_OF_AI = value("orpheus.start_of_ai")
VOICES = tuple(value("orpheus.voices"))
SAMPLING = {k: value(f"orpheus.{k}") for k in ("temperature", "top_p", "repetition_penalty")}
MIN_REPETITION_PENALTY = value("orpheus.min_repetition_penalty")
# What PyPI orpheus-speech 0.1.0 does (canopyai/Orpheus-TTS engine_class.py @835ac7c; Orpheus issues #259, #280).
ORPHEUS_SPEECH_0_1_0 = {
    "dtype": f"{value('orpheus.pypi_dtype')} (fixed default; fails on a T4)",
    "max_model_len": "not accepted (TypeError): vLLM takes 131072 from the config",
    "stop_token_ids": value("orpheus.pypi_stop_token_ids"),
    "sampling": dict(SAMPLING, max_tokens=value("orpheus.max_tokens")),
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
                      gpu_memory_utilization: float | None = None, vllm_version: str | None = None,
                      other_gib: float | None = None, **overrides):
    """vLLM engine arguments for Orpheus on ``gpu`` and the plan behind them: (kwargs, plan).

    ``other_gib`` is the memory others hold on the card when vLLM starts; None reads it from the card present
    (``hardware.other_gib_now``, 0 without one), and with no ``gpu_memory_utilization`` the share is lowered
    below the release's default where vLLM's start-up check needs it (``planner.max_startup_gmu``).

    dtype via ``resolve_dtype`` on the compute capability (bfloat16 on a T4 -> float16, or ValueError with
    ``strict``), max_model_len from the longest audio wanted, the rest (gpu_memory_utilization too: None is that
    release's default) from ``plan_vllm`` for ``vllm_version``
    (default: the vLLM installed here, else the planner's default), including what a GPU below CC 8.0 needs
    (``vllm_versions.below_sm80``; its reason is in ``plan.warnings``). ``overrides`` win over the plan.
    """
    from . import vllm_versions as versions
    from .hardware import get_gpu, other_gib_now, resolve_dtype
    from .kv_cache import max_model_len_for_audio, plan_vllm
    from .planner import max_startup_gmu

    positive(max_audio_seconds, "max_audio_seconds")
    spec = get_gpu(gpu)
    choice = resolve_dtype(dtype, spec, strict=strict)
    max_len = overrides.pop("max_model_len", None) or max_model_len_for_audio(max_audio_seconds,
                                                                              prompt_tokens=PROMPT_TOKENS)
    other = other_gib_now(spec) if other_gib is None else other_gib
    version = vllm_version or installed_vllm_version()
    parsed = versions.parse(version)
    if gpu_memory_utilization is None and other and versions.startup_check(
            parsed, versions.engine_v0(parsed, spec.compute_capability)):
        allowed = max_startup_gmu(spec, other)
        if allowed >= 0.01:  # below it plan_vllm refuses with the reason
            gpu_memory_utilization = min(versions.default_gmu(parsed), allowed)
    plan = plan_vllm(model, spec, gpu_memory_utilization=gpu_memory_utilization, dtype=choice.dtype,
                     max_model_len=max_len, strict=strict, vllm_version=version, other_gib=other)
    kwargs = plan.engine_kwargs()
    kwargs.update(overrides)
    return kwargs, plan


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
    def from_pretrained(cls, model_id: str = MODEL_ID, backend: str = "auto", gpu=None, max_audio_seconds: float = 30,
                        *, tokenizer_id: str | None = None, dtype="auto", strict: bool = False,
                        gpu_memory_utilization: float | None = None, snac=None, tokenizer=None, engine_log=None,
                        **engine_overrides) -> OrpheusTTS:
        """Load Orpheus for this machine.

        ``model_id``: a hub id, a local folder, or a key of ``WEIGHTS`` (``"unsloth"``: the non-gated
        mirror). ``tokenizer_id`` defaults to the model's own repository. A gated repository without
        access ends in one ``GatedModelError`` with the steps (colab_tts.hub). ``backend="auto"`` picks
        vLLM or transformers (``pick_backend``; the reason is in ``notes``). ``gpu`` defaults to the detected
        GPU (a catalog name or GpuSpec also works; "cpu" for none). On a GPU the vLLM arguments come from
        :func:`engine_kwargs_for`. ``engine_log``: a file for vLLM's start-up log (its KV-cache line stays in
        ``kv_line``). ``engine_overrides`` go to ``vllm.LLM`` as given.
        """
        from . import hub
        from .hardware import detect, dtype_name, get_gpu, resolve_dtype
        from .kv_cache import max_model_len_for_audio

        model_id = WEIGHTS.get(model_id, model_id) if isinstance(model_id, str) else model_id
        if not hub.is_local(model_id) and str(model_id).count("/") != 1:
            raise ValueError(f"model_id {model_id!r} is neither a local folder nor a hub id 'owner/name': use one "
                             f"of {sorted(WEIGHTS)} ({', '.join(WEIGHTS.values())}), a hub id or a folder")
        tokenizer_id = tokenizer_id or model_id
        backend, why = pick_backend(backend)
        positive(max_audio_seconds, "max_audio_seconds")
        kv_space = engine_overrides.pop("kv_space_gib", None)
        spec = get_gpu(gpu) if gpu is not None and not (isinstance(gpu, str) and gpu.lower() == "cpu") else (
            detect().gpu if gpu is None else None)
        model_spec = engine_overrides.pop("model_spec", "orpheus-3b")
        notes = [f"backend {why}"]
        if spec is not None and backend == "vllm":
            kwargs, plan = engine_kwargs_for(spec, max_audio_seconds, model=model_spec, dtype=dtype, strict=strict,
                                             gpu_memory_utilization=gpu_memory_utilization, **engine_overrides)
            chosen = dtype_name(kwargs["dtype"])
            notes += plan.warnings
        else:
            choice = resolve_dtype(dtype, spec, strict=strict)
            chosen, plan = choice.dtype, None
            notes.append(choice.reason)
            kwargs = {"dtype": chosen, "max_model_len": engine_overrides.pop("max_model_len", None)
                      or max_model_len_for_audio(max_audio_seconds, prompt_tokens=PROMPT_TOKENS)}
            kwargs.update(engine_overrides)
        alternative = (f'the non-gated mirror {MIRROR_ID}: OrpheusTTS.from_pretrained("unsloth") '
                       '(notebook 01: WEIGHTS = "unsloth")') if model_id == MODEL_ID else None
        if tokenizer is None or not hub.is_local(model_id):
            hub.check_access([model_id] + ([tokenizer_id] if tokenizer is None else []), alternative)
        with hub.gated_advice(model_id, alternative):
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(tokenizer_id)
            if backend == "vllm":
                from .orpheus_engines import VllmEngine

                engine = VllmEngine(model_id, kwargs, kv_space, log_path=engine_log)
            else:
                from .orpheus_engines import TransformersEngine

                engine = TransformersEngine(model_id, chosen)
        snac = snac if snac is not None else build_snac(pretrained=True)
        return cls(engine, tokenizer, snac, max_model_len=kwargs["max_model_len"], dtype=chosen,
                   engine_kwargs=kwargs, plan=plan, model_id=model_id, notes=notes,
                   max_audio_seconds=max_audio_seconds)

    @classmethod
    def offline_demo(cls, backend: str = "auto", max_audio_seconds: float = 4, *, path=None, seed: int = 0,
                     **engine_overrides) -> OrpheusTTS:
        """The same code path with no downloads: a tiny random Llama with Orpheus's vocabulary and special
        ids (colab_tts.orpheus_demo), a locally built tokenizer and SNAC 24 kHz with random weights.
        The pipeline is real; the audio is noise."""
        from .orpheus_demo import save_demo_model

        backend, why = pick_backend(backend)  # before building anything
        model_dir = save_demo_model(path, seed=seed)
        overrides = dict(enforce_eager=True, max_num_seqs=8, kv_space_gib=1) if backend == "vllm" else {}
        overrides.update(engine_overrides)
        tts = cls.from_pretrained(str(model_dir), backend=backend, gpu="cpu", max_audio_seconds=max_audio_seconds,
                                  dtype="float32", snac=build_snac(pretrained=False, seed=seed), **overrides)
        tts.notes[0] = f"backend {why}"
        return tts

    @property
    def kv_line(self) -> str | None:
        """vLLM's own log line on the KV cache it built (None for transformers)."""
        kv = getattr(self.backend, "kv", None)
        return kv.log_line if kv is not None else None

    @property
    def closed(self) -> bool:
        return self.backend is None

    def close(self) -> None:
        """Stop the engine and let go of the model, the tokenizer and SNAC, then collect and empty PyTorch's
        CUDA cache, so the GPU memory comes back; loading again in this process works."""
        if self.backend is not None:
            self.backend.close()
        self.backend = self.snac = self.tokenizer = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _open(self):
        if self.backend is None:
            raise ValueError("this OrpheusTTS was closed: load it again (OrpheusTTS.from_pretrained or "
                             "OrpheusTTS.offline_demo)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- synthesis ----------------------------------------------------------------------------

    def prompt_ids(self, text: str, voice: str = "tara") -> list[int]:
        self._open()
        voice = choose(voice, self.voices, "voice")
        return format_prompt(text, voice, self.tokenizer)

    def _sampling(self, prompt_len, temperature, top_p, repetition_penalty, max_tokens, seed) -> dict:
        positive(temperature, "temperature")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
        if repetition_penalty < MIN_REPETITION_PENALTY:
            raise ValueError(f"repetition_penalty must be >= {MIN_REPETITION_PENALTY} for stable Orpheus output "
                             f"(Orpheus README), got {repetition_penalty!r}")
        room = self.max_model_len - prompt_len
        if max_tokens is None:  # the longest audio asked for at load time, in whole frames
            max_tokens = min(room, math.ceil(self.max_audio_seconds * TOKENS_PER_SECOND / TOKENS_PER_FRAME) * TOKENS_PER_FRAME)
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

    def synthesize(self, text: str, voice: str = "tara", temperature: float = SAMPLING["temperature"],
                   top_p: float = SAMPLING["top_p"], repetition_penalty: float = SAMPLING["repetition_penalty"], max_tokens: int | None = None, seed: int | None = None,
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

    def synthesize_batch(self, texts, voice: str = "tara", temperature: float = SAMPLING["temperature"],
                         top_p: float = SAMPLING["top_p"], repetition_penalty: float = SAMPLING["repetition_penalty"], max_tokens: int | None = None,
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

    def stream(self, text: str, voice: str = "tara", temperature: float = SAMPLING["temperature"],
               top_p: float = SAMPLING["top_p"], repetition_penalty: float = SAMPLING["repetition_penalty"], max_tokens: int | None = None, seed: int | None = None,
               **stream_options) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks (24 kHz) while the model generates (see snac_decode.stream_audio)."""
        prompt = self.prompt_ids(text, voice)
        if self._too_long(prompt):
            raise ValueError(f"text is too long to stream with max_model_len={self.max_model_len}: split it "
                             "(colab_tts.text.split_text) and stream the parts")
        sampling = self._sampling(len(prompt), temperature, top_p, repetition_penalty, max_tokens, seed)
        yield from stream_audio(self.backend.stream(prompt, sampling), self.snac, **stream_options)

    def __repr__(self) -> str:
        backend = "closed" if self.backend is None else self.backend.name
        return (f"OrpheusTTS({self.model_id!r}, backend={backend}, dtype={self.dtype}, "
                f"max_model_len={self.max_model_len})")
