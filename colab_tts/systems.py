"""The TTS systems this project covers, and whether each fits a GPU, by one memory model: ``plan_vllm``'s.

A system is a decoder the planner sizes (a bundled ``ModelSpec``) and the other stages that sit on the same
GPU. ``fit_table`` asks ``plan_vllm``, per GPU, for the lowest ``gpu_memory_utilization`` at which one
request fits while the other stages hold their memory outside vLLM's share; a cell reads "fits" only
where that plan has KV room for the request (tests/test_kv_cache.py checks every cell against
``plan_vllm``). A decoder served by vLLM is planned with vLLM's defaults; one run in PyTorch is planned as
a batch of one (``max_num_seqs=1``, one prompt per profile pass, no CUDA graphs).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import vllm_versions as versions
from ._checks import positive
from .hardware import GPUS, dtype_name, get_gpu
from .kv_cache import (
    ORPHEUS_TOKENS_PER_SECOND,
    kv_bytes_per_token,
    lowest_gmu_for,
    max_startup_gmu,
    plan_vllm,
    request_len,
)
from .models import ModelSpec, covered_models, snac_weight_gib  # noqa: F401  - covered_models re-exported: importable here
from .units import GIB


def snac_gib(dtype: str = "float16") -> float:
    """SNAC 24 kHz's weights in ``dtype`` (``models.snac_weight_gib``: its cited parameter count)."""
    return snac_weight_gib(dtype)


@dataclass(frozen=True)
class System:
    """One TTS system as this project runs it: its decoder, how it is served, and what else sits on the GPU."""

    label: str
    model: str  # a bundled ModelSpec name
    served_by: str  # "vllm" or "torch"
    tokens_per_second: float | None = None  # None: one request is the decoder's whole context
    other: tuple[tuple[str, str], ...] = ()  # (stage, where its size comes from); sizes from other_gib()
    note: str = ""

    def request_tokens(self, seconds: float) -> int:
        return self.request(seconds)[0]

    def request(self, seconds: float) -> tuple[int, str | None]:
        """Tokens one request of ``seconds`` needs, capped at the decoder's context, and why it was capped."""
        spec = ModelSpec.known(self.model)
        if self.tokens_per_second is None:
            return spec.max_position_embeddings, None
        return request_len(spec, seconds, self.tokens_per_second)

    def other_gib(self, dtype: str = "float16") -> float:
        return snac_gib(dtype) if self.other else 0.0

    def plan_kwargs(self, seconds: float, dtype: str = "float16", vllm_version=None, other_gib: float = 0.0) -> dict:
        """plan_vllm's arguments for one request of ``seconds`` (the decoder's own context if it has no rate).

        ``other_gib``: memory other processes hold on the card when vLLM starts; the system's own other
        stages (``self.other_gib``) come on top of it.
        """
        positive(other_gib, "other_gib", allow_zero=True)
        tokens = self.request_tokens(seconds)
        kwargs = dict(dtype=dtype, max_model_len=tokens, other_gib=self.other_gib(dtype) + other_gib,
                      vllm_version=vllm_version)
        if self.served_by == "torch":  # a batch of one: one prompt per forward, one row of logits, no graphs
            kwargs.update(max_num_seqs=1, max_num_batched_tokens=tokens, enforce_eager=True)
        return kwargs


SYSTEMS = (
    System("Orpheus 3B + SNAC", "orpheus-3b", "vllm", ORPHEUS_TOKENS_PER_SECOND,
           (("SNAC 24 kHz decoder weights", "https://github.com/hubertsiuzdak/snac#pretrained-models"),),
           "vLLM with its defaults (256 sequences); SNAC beside it"),
    System("GPT-SoVITS v2 (GPT stage)", "gpt-sovits-v2-t2s", "torch",
           note="GPT stage only, its whole 1,500-step context; the SoVITS vocoder is not counted"),
    System("IndexTTS-2 (GPT stage)", "indextts2-gpt", "torch",
           note="GPT only; the whole pipeline (s2mel, BigVGAN, encoders) is counted in notebook 03"),
    System("MetaVoice-1B (first-stage GPT)", "metavoice-1b", "torch",
           note="first stage only; the second stage, multi-band diffusion and DeepFilterNet are not counted "
                "here. The '24 GB card' claim (metavoiceio/metavoice-src#30, ~20 GB on an RTX 4090 before a "
                "memory fix) is disputed: its README asks >= 12 GB and its Colab demo targets a T4"),
)


@dataclass
class Fit:
    """One cell of the fit table: the lowest gpu_memory_utilization that fits one request, and its plan."""

    system: System
    gpu: str
    gmu: float | None
    plan: object | None  # the VllmPlan at that gmu (None when nothing fits)
    other_gib: float  # the system's other stages on the GPU (not what other processes hold)
    at_default: bool = False  # it also fits at vLLM's default share (which vLLM's start-up check lets start)

    @property
    def fits(self) -> bool:
        return self.plan is not None and self.plan.fits

    @property
    def share(self) -> float | None:
        """Share of the GPU's memory the system needs: vLLM's lowest gmu plus the other stages."""
        return None if self.gmu is None else self.gmu + self.other_gib / self.plan.gpu.memory_gib


def fit(system: System, gpu, seconds: float = 30, dtype: str = "float16", vllm_version=None,
        other_gib: float = 0.0) -> Fit:
    """Does ``system`` fit ``gpu`` for one request of ``seconds``? Asked of plan_vllm (step 0.01 in gmu).

    ``other_gib`` is the memory other processes hold on the card when vLLM starts, as plan_vllm takes it
    (``hardware.other_gib_now()`` reads it on the card present).
    """
    positive(seconds, "seconds")
    kwargs = system.plan_kwargs(seconds, dtype, vllm_version, other_gib)
    gmu = lowest_gmu_for(system.model, gpu, **kwargs)
    plan = None if gmu is None else plan_vllm(system.model, gpu, gpu_memory_utilization=gmu, **kwargs)
    default = versions.default_gmu(versions.parse(vllm_version))
    at_default = False
    if plan is not None and plan.fits and gmu <= default:
        try:  # memory other processes hold can make vLLM refuse to start at the default share
            at_default = plan_vllm(system.model, gpu, gpu_memory_utilization=default, **kwargs).fits
        except ValueError:
            at_default = False
    key = gpu if isinstance(gpu, str) else get_gpu(gpu).name
    return Fit(system, key, gmu, plan, system.other_gib(dtype), at_default)


def fit_table(seconds: float = 30, dtype: str = "float16", gpus=None, systems=SYSTEMS, vllm_version=None,
              other_gib: float = 0.0) -> list[dict]:
    """Each system against each GPU: the share of memory one request needs, or OOM; and where it fits.

    Columns: the request's tokens, the decoder's weights (``ModelSpec.weight_gib``, what the plan counts),
    its KV cache for one request, the runtime (profile peak + non-torch + CUDA graphs, at the lowest fitting
    gmu on the first GPU that fits) and the other stages; then one column per GPU. ``other_gib`` is the
    memory other processes hold on every card when vLLM starts (plan_vllm's ``other_gib``; the system's own
    other stages come on top): a card they leave too little of reads OOM.
    """
    positive(seconds, "seconds")
    positive(other_gib, "other_gib", allow_zero=True)
    dtype = dtype_name(dtype)
    keys = list(GPUS) if gpus is None else list(gpus)
    rows = []
    for system in systems:
        spec = ModelSpec.known(system.model)
        cells = {k: fit(system, k, seconds, dtype, vllm_version, other_gib) for k in keys}
        tokens = system.request_tokens(seconds)
        first = next((c.plan for c in cells.values() if c.fits), None)
        row = {"system": system.label, "tokens": tokens, "weights GiB": spec.weight_gib(dtype),
               "KV GiB": kv_bytes_per_token(spec, dtype) * tokens / GIB,
               "runtime GiB": (first.activation_gib + first.non_torch_gib + first.cudagraph_gib) if first else None,
               "other GiB": system.other_gib(dtype)}
        for k, cell in cells.items():
            row[k] = f"{cell.share:.0%}" if cell.fits else "OOM"
        default = versions.default_gmu(versions.parse(vllm_version))
        at_default = [k for k, c in cells.items() if c.at_default]
        raised = [f"{k} (gpu_memory_utilization {c.gmu:.2f})" for k, c in cells.items() if c.fits and c.gmu > default]
        lowered = [f"{k} (gpu_memory_utilization {c.gmu:.2f} to {max_startup_gmu(k, c.plan.other_gib):.2f})"
                   for k, c in cells.items() if c.fits and c.gmu <= default and not c.at_default]
        row["fits on"] = (", ".join(at_default) or "none") + f" at vLLM's default share ({default})" + (
            f"; only with a raised share: {', '.join(raised)}" if raised else "") + (
            f"; only with a lowered share, as other processes hold memory: {', '.join(lowered)}" if lowered else "")
        capped = system.request(seconds)[1]
        row["note"] = system.note + (f" ({capped})" if capped else "")
        rows.append(row)
    return rows
