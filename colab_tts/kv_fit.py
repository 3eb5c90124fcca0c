"""The vLLM settings that make a model fit a GPU, and how fast they will be.

``plan_vllm`` answers "does it fit with these settings?". ``fit_vllm`` answers the question a
person with an 8 GB card or a free T4 has: which settings fit, and how fast are they? It searches
what a person may change -

- ``max_num_seqs``: the sampler's warm-up holds fp32 copies of [max_num_seqs, vocab] logits (~10 where
  top-k/top-p sorts the vocabulary, fewer with the in-place kernels: ``vllm_versions.sampler_sorts``),
  which for Orpheus's vocabulary at vLLM's default max_num_seqs outweighs the forward pass on small cards;
- ``max_num_batched_tokens``: the profile forward pass grows with it;
- ``enforce_eager``: no CUDA-graph pool (vLLM >= 0.20 sets it aside), at some speed cost;
- ``gpu_memory_utilization``: from vLLM's default (``vllm_versions.default_gmu``) up to ``gmu_ceiling`` (what
  vLLM's start-up check allows with the memory others hold), below the default where that check needs it;
- the KV dtype and the weight quantization, only within the ``quality`` the person allows -

and keeps the plan, among those that fit by ``plan_vllm``'s own account, with the highest
predicted throughput for the requested audio length and concurrency. Throughput is the bandwidth
roofline (every decode step reads the weights once and each sequence's KV cache): a ceiling, not a
measurement; real engines reach part of it (see ``hardware.decode_ceiling_tokens_per_s``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

from . import quantization as quant
from . import vllm_versions as versions
from ._checks import choose, fraction, positive
from .cited import cited
from .hardware import GPUS, get_gpu
from .planner import (  # noqa: F401  - SAFE_GMU_CEILING, gmu_ceiling re-exported: importable here
    BLOCK_SIZE,
    ORPHEUS_TOKENS_PER_SECOND,
    SAFE_GMU_CEILING,
    PlanInvariantError,
    VllmPlan,
    _spec,
    _version,
    beyond_context,
    cards_that_fit,
    gmu_ceiling,
    max_startup_gmu,
    plan_vllm,
    request_len,
    startup_refusal,
    vllm_budget,
)
from .units import GIB

# KV room beyond what the requests need, so that an error in the fitted overheads does not turn a fit
# into a start-up failure: the spread those overheads show in published logs (non-torch memory
# -0.12..0.35 GiB, CUDA-graph estimates 0.09..0.58 GiB; see kv_cache.GpuOverheads).
HEADROOM_GIB = 0.25
# IndexTTS-2's GPT predicts MaskGCT semantic codes, 50 per second of audio (w2v-BERT 2.0 features at
# 50 Hz; MaskGCT, https://arxiv.org/abs/2409.00750).
INDEXTTS2_TOKENS_PER_SECOND = 50.0
QUALITIES = {
    "lossless": ((None,), ("auto",)),
    "8bit": ((None, "fp8"), ("auto", "fp8")),
    "4bit": ((None, "fp8", "awq", "gptq", "bitsandbytes"), ("auto", "fp8")),
}
_RANK = {None: 0, "fp8": 1, "awq": 2, "gptq": 2, "bitsandbytes": 3}  # fewer bits (or slower kernel) last


@dataclass(repr=False)
class FitPlan(VllmPlan):
    """A ``VllmPlan`` chosen by ``fit_vllm``, with its predicted speed and what it costs in quality."""

    concurrency: int = 1
    quality: str = "lossless"
    tokens_per_second: float = 0.0  # one stream at batch 1, bandwidth roofline
    aggregate_tokens_per_second: float = 0.0  # all `concurrency` streams together, roofline
    audio_tokens_per_second: float | None = None  # model tokens per second of audio
    quality_note: str = ""
    kernel: str = ""
    searched: int = 0  # settings tried
    default_plan_fits: bool = False
    headroom_gib: float = 0.0  # KV memory beyond what `concurrency` requests of max_model_len need
    request_note: str = ""  # why max_model_len is less than the audio asked for (capped at the model's context)

    @property
    def real_time_factor(self) -> float | None:
        """Seconds of compute per second of audio at batch 1 (< 1: faster than real time), by the roofline."""
        if not self.audio_tokens_per_second:
            return None
        return self.audio_tokens_per_second / self.tokens_per_second

    @property
    def stream_tokens_per_second(self) -> float:
        """Each stream's share when all ``concurrency`` requests decode together."""
        return self.aggregate_tokens_per_second / self.concurrency

    def explain(self) -> str:
        lines = [super().explain(), f"  chosen by fit_vllm from {self.searched} settings (quality={self.quality!r})"]
        if self.request_note:
            lines.append(f"  request: {self.request_note}")
        lines.append(f"  weights kernel: {self.kernel}")
        lines.append(f"  predicted (bandwidth roofline, a ceiling): {self.tokens_per_second:.0f} tokens/s at batch 1"
                     + (f" = real-time factor {self.real_time_factor:.2f}" if self.real_time_factor else "")
                     + (f"; {self.aggregate_tokens_per_second:.0f} tokens/s over {self.concurrency} streams"
                        if self.concurrency > 1 else ""))
        lines.append(f"  headroom: {self.headroom_gib:.2f} GiB of KV beyond the requests"
                     + ("" if self.headroom_gib >= HEADROOM_GIB else f" (under {HEADROOM_GIB} GiB: tight, the"
                        " planner's overhead terms could eat it)"))
        lines.append(f"  quality: {self.quality_note}")
        return "\n".join(lines)

    __str__ = explain

    def __repr__(self) -> str:
        rtf = f", RTF {self.real_time_factor:.2f}" if self.real_time_factor else ""
        return (f"FitPlan({self.model.name} on {self.gpu.name}: {self.quantization or self.dtype} weights, KV "
                f"{self.kv_cache_dtype}, gmu={self.gpu_memory_utilization}, max_num_seqs={self.max_num_seqs}, "
                f"eager={self.enforce_eager}, {self.tokens_per_second:.0f} tokens/s{rtf})")


def decode_tokens_per_second(plan: VllmPlan, batch: int = 1, context: int | None = None) -> float:
    """Roofline tokens/s of ``batch`` streams together: bandwidth / (weights read + each stream's KV read).

    A decode step reads every weight once (the input embedding only one row, unless tied to the LM
    head) and each stream's KV cache up to ``context`` tokens (default: half of max_model_len).
    """
    positive(batch, "batch", integer=True)
    spec = plan.model
    context = plan.max_model_len // 2 if context is None else context
    weights = plan.weights_gib * GIB
    if not spec.tie_word_embeddings:  # the input table is looked up, not streamed
        weights -= spec.vocab_size * spec.hidden_size * quant.DTYPE_BYTES[plan.dtype] / plan.tensor_parallel_size
    step = weights + batch * plan.kv_bytes_per_token * context
    return batch * plan.gpu.bandwidth_gbs * 1e9 / step


def audio_rate(model_name: str, tokens_per_second=None) -> float | None:
    """Model tokens per second of audio: the argument, else the covered system's rate (None: not a TTS decoder)."""
    if tokens_per_second is not None:
        return positive(tokens_per_second, "tokens_per_second")
    rates = {"orpheus-3b": ORPHEUS_TOKENS_PER_SECOND,  # 7 SNAC tokens per 2048-sample frame at 24 kHz
             "gpt-sovits-v2-t2s": float(cited("gpt_sovits.semantic_tokens_per_second").value),
             "indextts2-gpt": INDEXTTS2_TOKENS_PER_SECOND}
    return rates.get(model_name)


def _candidates(spec, gpu, version, quality, concurrency):
    schemes, kv_dtypes = QUALITIES[quality]
    schemes = [s for s in schemes if s is None or s in quant.allowed_schemes(gpu, version)]
    kv_ok = []
    for kv in kv_dtypes:
        try:
            quant.check_kv_cache_dtype(kv, gpu, version)
            kv_ok.append(kv)
        except ValueError:
            pass
    seqs = sorted({None, concurrency}, key=lambda s: -1 if s is None else s)
    return itertools.product(schemes, kv_ok, (False, True), seqs, (None, 2048))


def _fits(plan: VllmPlan, concurrency: int) -> bool:
    return plan.fits and plan.max_concurrency >= concurrency and plan.max_num_seqs >= concurrency


def _kv_tokens(max_model_len: int, concurrency: int) -> int:
    """KV tokens ``concurrency`` requests of max_model_len hold: whole blocks each."""
    return -(-max_model_len // BLOCK_SIZE) * BLOCK_SIZE * concurrency


def _headroom_gib(plan: VllmPlan, concurrency: int) -> float:
    return plan.kv_cache_gib - plan.kv_bytes_per_token * _kv_tokens(plan.max_model_len, concurrency) / GIB


def fit_vllm(model, gpu, *, audio_seconds=None, max_model_len=None, concurrency: int = 1, quality: str = "lossless",
             tokens_per_second=None, vllm_version=None, other_gib: float = 0.0, dtype="auto",
             tensor_parallel_size: int = 1, gpu_memory_utilization=None, flashinfer_sampler=None) -> FitPlan:
    """The vLLM settings that fit ``model`` on ``gpu`` with the highest predicted throughput.

    ``audio_seconds`` sets max_model_len (prompt + seconds x the model's tokens per second, ``audio_rate``;
    capped at the model's context with the reason in ``request_note``) unless ``max_model_len`` is given. ``concurrency`` requests of that length must fit at
    once. ``quality`` is the person's choice: "lossless" keeps 16-bit weights and KV, "8bit" also
    allows fp8 weights and an fp8 KV cache, "4bit" also AWQ / GPTQ / bitsandbytes. The plan returned
    is ``plan_vllm(**plan.engine_kwargs())``, field for field. Raises ValueError saying how much is
    missing when nothing fits, and, when even the smallest weights the quality allows exceed the card,
    which smaller model, quality or tensor-parallel machine would fit.

    ``other_gib`` is the memory other processes hold on the card when vLLM starts (``hardware.other_gib_now()``
    reads it on a GPU): the share returned always passes vLLM's start-up check (the share must be free once
    vLLM's own CUDA context exists), lowered below vLLM's default where it must; if no share can, one
    ValueError says how much must be free. ``gpu_memory_utilization`` fixes the share instead of searching it;
    ``dtype``, ``tensor_parallel_size`` and ``flashinfer_sampler`` are passed to every plan as asked.
    """
    spec = _spec(model)
    gpu = get_gpu(gpu)
    quality = choose(quality, QUALITIES, "quality")
    positive(concurrency, "concurrency", integer=True)
    rate = audio_rate(spec.name, tokens_per_second)
    if max_model_len is None:
        if audio_seconds is None:
            raise ValueError("give audio_seconds (e.g. 30) or max_model_len: fit_vllm plans for a request length")
        if rate is None:
            raise ValueError(f"{spec.name} has no known tokens per second of audio: pass tokens_per_second= "
                             "or max_model_len=")
        max_model_len, capped = request_len(spec, audio_seconds, rate)
    else:
        capped = None
    positive(max_model_len, "max_model_len", integer=True)
    if max_model_len > spec.max_position_embeddings:
        raise ValueError(beyond_context(spec, max_model_len))
    version = _version(vllm_version)  # None: plan_vllm's default release (vllm_versions.COLAB_VLLM)
    positive(other_gib, "other_gib", allow_zero=True)
    ceiling = gmu_ceiling(gpu, other_gib)
    checked = versions.startup_check(versions.parse(vllm_version), versions.engine_v0(
        versions.parse(vllm_version), gpu.compute_capability))
    if ceiling < 0.01:
        raise ValueError(startup_refusal(gpu, 0.01, other_gib, versions.parse(vllm_version)))
    if gpu_memory_utilization is not None:
        gmu = fraction(gpu_memory_utilization, "gpu_memory_utilization")
        if checked and gmu > max_startup_gmu(gpu, other_gib):
            raise ValueError(startup_refusal(gpu, gmu, other_gib, versions.parse(vllm_version)))
        grid = [gmu]
    else:
        start = min(versions.default_gmu(versions.parse(vllm_version)), ceiling)
        grid = [round(g / 100, 2) for g in range(int(round(start * 100)), int(round(ceiling * 100)) + 1)] or [ceiling]
    common = dict(max_model_len=max_model_len, vllm_version=vllm_version, dtype=dtype, other_gib=other_gib,
                  tensor_parallel_size=tensor_parallel_size, flashinfer_sampler=flashinfer_sampler)
    kv_tokens = _kv_tokens(max_model_len, concurrency)
    default_fits = _fits_default(spec, gpu, common, concurrency)
    best, best_key, closest, searched, budgets = None, None, None, 0, []
    for scheme, kv, eager, seqs, mbt in _candidates(spec, gpu, version, quality, concurrency):
        settings = dict(common, quantization=scheme, kv_cache_dtype=kv, enforce_eager=eager, max_num_seqs=seqs,
                        max_num_batched_tokens=mbt)
        searched += 1
        budget = vllm_budget(spec, gpu, gpu_memory_utilization=grid[-1], **settings)  # plan_vllm's own sum
        budgets.append(budget)
        if closest is None or budget.need_gib(kv_tokens) < closest[0].need_gib(kv_tokens):
            closest = (budget, settings)
        if not budget.weights_fit:
            continue
        try:
            top = plan_vllm(spec, gpu, gpu_memory_utilization=grid[-1], **settings)
        except ValueError:  # the profile run alone exceeds the card
            continue
        if not _fits(top, concurrency):
            continue
        plan = _lowest_fitting(spec, gpu, grid, settings, concurrency) or top
        speed = decode_tokens_per_second(plan, min(concurrency, plan.max_num_seqs))
        # room for the planner's error first; then fastest; then CUDA graphs, more bits, vLLM's defaults,
        # the lower memory share
        key = (_headroom_gib(plan, concurrency) >= HEADROOM_GIB, round(speed, 1), not eager, -_RANK[scheme], kv == "auto", seqs is None, mbt is None,
               -plan.gpu_memory_utilization)
        if best_key is None or key > best_key:
            best, best_key = plan, key
    if best is None:
        if not any(b.weights_fit for b in budgets):
            raise ValueError(_weights_refusal(spec, gpu, quality, budgets, max_model_len, concurrency, vllm_version,
                                              common, gpu_memory_utilization))
        raise ValueError(_refusal(spec, gpu, closest, kv_tokens, concurrency, quality, max_model_len))
    fitted = _fitted(_engine_plan(best), concurrency, quality, rate, searched, default_fits, version)
    fitted.request_note = capped or ""
    return fitted


def _engine_plan(plan: VllmPlan) -> VllmPlan:
    """plan_vllm of exactly the engine arguments ``plan`` hands to vLLM: what a person re-planning them gets."""
    kwargs = plan.engine_kwargs()
    kwargs.pop("attention_backend", None)  # no input of the sum: plan_vllm derives it below CC 8.0
    again = plan_vllm(plan.model, plan.gpu, vllm_version=plan.vllm_version, other_gib=plan.other_gib,
                      flashinfer_sampler=plan.inputs.get("flashinfer_sampler"), **kwargs)
    if again.num_blocks != plan.num_blocks or again.engine_kwargs() != plan.engine_kwargs():
        raise PlanInvariantError(f"planner bug: the engine arguments {plan.engine_kwargs()} re-plan to "
                                 f"{again.num_blocks:,} blocks, not the {plan.num_blocks:,} fit_vllm chose")
    return again


def _lowest_fitting(spec, gpu, grid, settings, concurrency) -> VllmPlan | None:
    """The lowest gpu_memory_utilization with HEADROOM_GIB to spare, else the lowest that fits at all."""
    fitting = []
    for gmu in grid:
        try:
            plan = plan_vllm(spec, gpu, gpu_memory_utilization=gmu, **settings)
        except ValueError:
            continue
        if _fits(plan, concurrency):
            if _headroom_gib(plan, concurrency) >= HEADROOM_GIB:
                return plan
            fitting.append(plan)
    return fitting[-1] if fitting else None


def _fits_default(spec, gpu, common, concurrency) -> bool:
    try:
        return _fits(plan_vllm(spec, gpu, **common), concurrency)
    except ValueError:
        return False


def _fitted(plan: VllmPlan, concurrency, quality, rate, searched, default_fits, version) -> FitPlan:
    base = {f.name: getattr(plan, f.name) for f in fields(VllmPlan)}
    return FitPlan(
        **base, concurrency=concurrency, quality=quality,
        tokens_per_second=decode_tokens_per_second(plan, 1),
        aggregate_tokens_per_second=decode_tokens_per_second(plan, min(concurrency, plan.max_num_seqs)),
        audio_tokens_per_second=rate,
        quality_note=quant.quality_note(plan.model.name, plan.quantization, plan.engine_settings.get(
            "kv_cache_dtype", "auto"), plan.dtype),
        kernel=quant.kernel(plan.quantization, plan.gpu, version, plan.dtype),
        searched=searched, default_plan_fits=default_fits, headroom_gib=_headroom_gib(plan, concurrency),
    )


def _bigger_cards(spec, gpu, settings, concurrency) -> list[str]:
    """Catalog GPUs with more memory on which ``settings`` fit (planner.cards_that_fit, the one rule)."""
    return cards_that_fit(spec, bigger_than=gpu, concurrency=concurrency, **settings)


def _refusal(spec, gpu, closest, kv_tokens, concurrency, quality, max_model_len) -> str:
    budget, settings = closest
    option = (f"{budget.weights_label} weights, {budget.kv_label} KV, "
              f"max_num_seqs={settings['max_num_seqs'] or 'default'}, enforce_eager={settings['enforce_eager']}")
    tries = []
    if quality == "lossless" and {"fp8"} & set(quant.allowed_schemes(gpu)):
        tries.append("quality='8bit' (fp8 weights)")
    if quality != "4bit" and {"awq", "gptq"} & set(quant.allowed_schemes(gpu)):
        tries.append("a 4-bit checkpoint (quality='4bit')")
    cards = _bigger_cards(spec, gpu, settings, concurrency)
    if cards:
        tries.append(f"a {GPUS[cards[0]].memory_gib:.1f} GiB card ({GPUS[cards[0]].name})")
    tries.append("a shorter max_model_len / audio_seconds")
    need = math.ceil(budget.need_gib(kv_tokens) * 100) / 100  # rounded apart, so the gap never prints as none
    gives = math.floor(budget.budget / GIB * 100) / 100
    return (f"{spec.name} with max_model_len={max_model_len:,} x {concurrency} request(s) needs "
            f"{need:.2f} GiB; the best option ({option}) gives {gives:.2f} GiB on "
            f"{gpu.name} at gpu_memory_utilization={budget.gpu_memory_utilization} - try {' or '.join(tries)}")


def _tensor_parallel(spec, scheme, max_model_len, concurrency, vllm_version) -> str | None:
    """The fewest catalog GPUs of one kind (2, 4 or 8) whose tensor-parallel plan fits, smallest card first."""
    for tp in (2, 4, 8):
        for key, card in sorted(GPUS.items(), key=lambda kv: kv[1].memory_gib):
            try:
                plan = plan_vllm(spec, card, tensor_parallel_size=tp, gpu_memory_utilization=gmu_ceiling(card),
                                 max_model_len=max_model_len, quantization=scheme, vllm_version=vllm_version)
            except ValueError:  # TP that does not divide the heads, a scheme the card cannot run, weights too big
                continue
            if _fits(plan, concurrency):
                return (f"tensor_parallel_size={tp} on {tp} x {key} ({card.memory_gib:.2f} GiB each, "
                        f"{plan.weights_gib:.2f} GiB of weights per GPU)")
    return None


def _weights_refusal(spec, gpu, quality, budgets, max_model_len, concurrency, vllm_version, common=None,
                     gpu_memory_utilization=None) -> str:
    """Even the fewest bits ``quality`` allows leave weights beyond the budget: say so and what would fit."""
    smallest = min(budgets, key=lambda b: b.weights)
    kv_tokens = _kv_tokens(max_model_len, concurrency)
    scheme = smallest.weights_label if smallest.weights_label in quant.SCHEMES else None
    fixes = []
    for lower in list(QUALITIES)[list(QUALITIES).index(quality) + 1:]:
        try:
            same = {k: v for k, v in (common or {}).items() if k not in ("max_model_len", "vllm_version")}
            plan = fit_vllm(spec, gpu, max_model_len=max_model_len, concurrency=concurrency, quality=lower,
                            vllm_version=vllm_version, gpu_memory_utilization=gpu_memory_utilization, **same)
        except ValueError:
            continue
        fixes.append(f"quality={lower!r} ({plan.quantization} weights: {plan.weights_gib:.2f} GiB, fitted by fit_vllm)")
        break
    four = {s: vllm_budget(spec, gpu, gpu_memory_utilization=smallest.gpu_memory_utilization,
                           max_model_len=max_model_len, quantization=s, vllm_version=vllm_version).weights
            for s in ("awq", "gptq") if s in quant.allowed_schemes(gpu, _version(vllm_version))}
    if not fixes and quality != "4bit" and four:
        least = min(four, key=four.get)
        fixes.append(f"no quality fits it here: even 4-bit ({least}) weights are {four[least] / GIB:.2f} GiB of the "
                     f"{smallest.budget / GIB:.2f} GiB budget")
    room = smallest.budget - (smallest.fixed - smallest.weights) - smallest.kv_bytes_per_token * kv_tokens
    if room > 0:
        per_param = smallest.weights / spec.num_params
        fixes.append(f"a smaller model: at most {room / per_param / 1e9:.1f} B parameters in "
                     f"{smallest.weights_label} (what the budget leaves after this model's runtime and KV cache)")
    tp = _tensor_parallel(spec, scheme, max_model_len, concurrency, vllm_version)
    if tp:
        fixes.append(tp)
    if not fixes:
        fixes.append("nothing in this package's GPU catalog, even with 8-way tensor parallelism")
    return (f"{spec.name} does not fit on {gpu.name}: its weights are {smallest.weights / GIB:.2f} GiB in "
            f"{smallest.weights_label} (the fewest bits quality={quality!r} allows), beyond the card's "
            f"{gpu.memory_gib:.2f} GiB ({smallest.budget / GIB:.2f} GiB for vLLM at gpu_memory_utilization="
            f"{smallest.gpu_memory_utilization}). What would fit: " + "; ".join(fixes) + ".")
