"""What GPU is this, what can it run, and which dtype should it use.

The catalog holds the GPUs people really get (a free Colab T4, 8 GB consumer cards, the bigger
Colab and cloud cards). Its figures live in ``colab_tts/data/cited/gpus.json``, each with its public
source (datasheets for bandwidth and TFLOPS, NVIDIA's CUDA GPU list for compute capability, published
logs for the memory torch reports). A custom ``GpuSpec(...)`` works anywhere a catalog name does.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from ._checks import choose, positive
from .cited import DATA, cited
from .colab import in_colab  # noqa: F401  - re-exported: colab_tts.hardware.in_colab stays importable
from .dtypes import DTYPE_BYTES, DTYPES, dtype_name, torch_dtype  # noqa: F401  - re-exported: importable here
from .models import covered_models, covered_weight_gib
from .units import GIB


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. ``memory_gib`` is what torch reports as total memory, not the box size."""

    name: str
    compute_capability: tuple[int, int]
    memory_gib: float
    bandwidth_gbs: float
    fp16_tflops: float
    source: str = ""
    torch_names: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise TypeError("GpuSpec.name must be a non-empty string, e.g. 'Tesla T4'")
        cc = self.compute_capability
        if (
            not isinstance(cc, (tuple, list))
            or len(cc) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in cc)
        ):
            raise TypeError(f"GpuSpec.compute_capability must be a (major, minor) tuple like (7, 5), got {cc!r}")
        object.__setattr__(self, "compute_capability", tuple(cc))
        positive(self.memory_gib, "GpuSpec.memory_gib")
        positive(self.bandwidth_gbs, "GpuSpec.bandwidth_gbs")
        positive(self.fp16_tflops, "GpuSpec.fp16_tflops")

    @property
    def bf16(self) -> bool:
        """bfloat16 in hardware needs Ampere (CC 8.0) or newer; decide by CC, not by torch."""
        return self.compute_capability >= (8, 0)

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    def __str__(self) -> str:
        return f"{self.name} (CC {self.cc}, {self.memory_gib:.2f} GiB, {self.bandwidth_gbs:g} GB/s)"


FIGURES = ("compute_capability", "memory_gib", "bandwidth_gbs", "fp16_tflops")


def _load_catalog() -> dict[str, GpuSpec]:
    catalog = json.loads((DATA / "gpus.json").read_text())["_catalog"]
    gpus = {}
    for key, names in catalog.items():
        figures = {f: cited(f"gpus.{key}.{f}") for f in FIGURES}
        sources = "; ".join(f"{f}: {c.source}" for f, c in figures.items())
        gpus[key] = GpuSpec(names["name"], tuple(figures["compute_capability"].value), figures["memory_gib"].value,
                            figures["bandwidth_gbs"].value, figures["fp16_tflops"].value, sources,
                            tuple(names["torch_names"]))
    return gpus


GPUS: dict[str, GpuSpec] = _load_catalog()


def figure_source(key: str, figure: str) -> str:
    """Where a catalog figure comes from, e.g. figure_source("T4", "bandwidth_gbs") -> a datasheet URL."""
    return cited(f"gpus.{key}.{figure}").source


# The memory sizes NVIDIA sells cards with, in GB (the box's GiB): torch reports less (ECC, reserved memory).
MARKETED_GB = (2, 3, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 80, 94, 96, 141, 192)


def memory_class_gb(gpu) -> int:
    """The memory a card is sold with, in GB: the smallest marketed size at or above what torch reports
    (the T4's to 16, the A10G's to 24, an A100 40GB's to 40)."""
    gib = get_gpu(gpu).memory_gib
    return next((gb for gb in MARKETED_GB if gb >= gib), math.ceil(gib))


def memory_classes_gb() -> set[int]:
    """The memory classes of the catalog's cards (8, 12, 16, 24, 40, 80)."""
    return {memory_class_gb(g) for g in GPUS.values()}


def eight_gb_card(gpu) -> GpuSpec:
    """``gpu`` if it is an 8 GB card (``memory_class_gb`` 8: torch reports more than 6 and at most 8 GiB), else
    ValueError naming the catalog's 8 GB cards."""
    spec = get_gpu(gpu)
    if memory_class_gb(spec) != 8:
        eights = ", ".join(k for k, g in GPUS.items() if memory_class_gb(g) == 8)
        raise ValueError(f"{gpu if isinstance(gpu, str) else spec.name!r} is a {memory_class_gb(spec)} GB card "
                         f"({spec.memory_gib:.2f} GiB), not an 8 GB one: name one of {eights}")
    return spec


def _norm(name: str) -> str:
    # Older drivers drop the "NVIDIA " prefix ("GeForce RTX 3090"): match with or without it.
    return re.sub(r"^nvidia-", "", re.sub(r"[\s_]+", "-", name.strip().lower()))


def _lookup() -> dict[str, str]:
    table = {}
    for key, spec in GPUS.items():
        for alias in (key, spec.name, *spec.torch_names):
            table[_norm(alias)] = key
    return table


def get_gpu(gpu) -> GpuSpec:
    """A catalog GPU by key ("T4", case-insensitive) or by the name torch reports ("Tesla T4").

    A ``GpuSpec`` is returned unchanged, so every function taking a GPU takes a custom one too.
    """
    if isinstance(gpu, GpuSpec):
        return gpu
    if not isinstance(gpu, str):
        raise TypeError(f"gpu must be a catalog name such as 'T4' or a GpuSpec, got {type(gpu).__name__}")
    key = _lookup().get(_norm(gpu)) or _without_memory(gpu)
    if key is None:
        _unknown(gpu)
    return GPUS[key]


def _bare(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _norm(name))


def _without_memory(name: str) -> str | None:
    """The catalog key a name typed without separators or without its memory ("RTX 3060", "rtx3070", "H100")
    means, where exactly one card fits; several ("A100": 40 or 80 GB) raise naming them."""
    typed = _bare(name)
    if not typed:
        return None
    keys = {key for alias, key in _lookup().items() if typed in (_bare(alias), _bare(re.sub(r"-\d+gb$", "", alias)))}
    if len(keys) > 1:
        raise ValueError(f"GPU {name!r} names {' or '.join(sorted(keys))}: type which (its memory tells them apart)")
    return keys.pop() if keys else None


def _unknown(name: str):
    """Raise for a name the catalog lacks. A model number is the card, not a typo: the hint names only cards
    with the same number ("RTX 3080" gets no 'Did you mean RTX-3090?')."""
    digits = re.findall(r"\d{2,}", name)
    same = [k for k in GPUS if digits and set(digits) <= set(re.findall(r"\d{2,}", k))]
    if not digits:
        choose(name, GPUS, "GPU")  # raises, listing the catalog and the closest name
    hint = f" Did you mean {' or '.join(map(repr, same))}?" if same else ""
    raise ValueError(f"Unknown GPU {name!r}.{hint} Known: {', '.join(GPUS)}. A card not listed: pass "
                     "hardware.GpuSpec(name, compute_capability, memory_gib, bandwidth_gbs, fp16_tflops).")


# --- dtypes ------------------------------------------------------------------------------------

# The errors people meet when bf16 reaches a Turing GPU, quoted for the notebooks.
BF16_ERRORS = {
    "vLLM": (
        "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
        "Your Tesla T4 GPU has compute capability 7.5. You can use float16 instead by explicitly "
        "setting the `dtype` flag in CLI, for example: --dtype=half.",
        "vllm-project/vllm vllm/platforms/cuda.py @752a3a504",
    ),
    "MetaVoice-1B": (
        "RuntimeError: Current CUDA Device does not support bfloat16. Please switch dtype to float16.",
        "https://github.com/metavoiceio/metavoice-src/issues/27",
    ),
}


def _maybe_gpu(gpu) -> GpuSpec | None:
    if gpu is None or (isinstance(gpu, str) and gpu.strip().lower() == "cpu"):
        return None
    return get_gpu(gpu)


# GTX 16xx cards are Turing (CC 7.5) without tensor cores. Float16 NaNs on them are reported for
# convolution networks through cuDNN; no report was found for LLM inference, which people do run in
# float16 on a GTX 1660 Ti. So "auto" stays on float32 there, and an explicit float16 is honoured with
# this warning.
GTX16_FP16_WARNING = (
    "float16 on a GTX 16xx card: NaN outputs in float16 are reported on these cards for convolution networks "
    "(https://github.com/pytorch/pytorch/issues/58123, https://github.com/pytorch/pytorch/issues/77955); no "
    "report was found for LLM inference. Check the first outputs for NaN; dtype='float32' avoids the risk at "
    "twice the memory."
)


def _gtx16(spec: GpuSpec) -> bool:
    return bool(re.search(r"gtx\s*16\d\d", spec.name.lower()))


def pick_dtype(gpu) -> str:
    """What ``dtype="auto"`` picks: bf16 from CC 8.0, fp16 on Volta/Turing (fp32 on GTX 16xx), else fp32.

    Decided on the compute capability alone, never on ``torch.cuda.is_bf16_supported()`` (which can
    answer True on a T4 through emulation). ``gpu`` is a GpuSpec, a catalog or torch name, or None / "cpu".
    """
    spec = _maybe_gpu(gpu)
    if spec is None or _gtx16(spec) or spec.compute_capability < (7, 0):
        return "float32"
    return "bfloat16" if spec.bf16 else "float16"


class DtypeChoice(NamedTuple):
    dtype: str
    reason: str
    warnings: tuple[str, ...] = ()


def resolve_dtype(requested, gpu, strict: bool = False) -> DtypeChoice:
    """The dtype to use for ``requested`` on ``gpu``, why, and any risk to know about.

    Only ``"auto"`` chooses (see :func:`pick_dtype`). An explicit dtype is the person's choice and is
    kept, with a warning where there is a known risk (float16 on a GTX 16xx), except what the hardware
    cannot run: bfloat16 below compute capability 8.0 becomes float16 with a warning, or with
    ``strict=True`` raises ValueError naming the fix.
    """
    spec = _maybe_gpu(gpu)
    where = "the CPU" if spec is None else f"{spec.name} (CC {spec.cc})"
    if isinstance(requested, str) and requested.strip().lower() == "auto":
        best = pick_dtype(spec)
        why = f"auto: {best} is the best-supported dtype on {where}"
        if spec is not None and _gtx16(spec):
            why += " (float16 NaNs are reported on GTX 16xx cards; pass dtype='float16' to use it anyway)"
        return DtypeChoice(best, why)
    name = dtype_name(requested)
    if name == "bfloat16" and spec is not None and not spec.bf16:
        msg = (
            f"bfloat16 needs compute capability >= 8.0 (Ampere); {where} has no bfloat16. "
            "Use dtype='float16' (same memory, same speed on this GPU) or dtype='auto'."
        )
        if strict:
            raise ValueError(msg)
        reason = msg.split(". Use")[0] + ": using float16 instead."
        return DtypeChoice("float16", reason, (reason,))
    if name == "float16" and spec is not None and _gtx16(spec):
        return DtypeChoice(name, f"float16 as requested on {where}", (GTX16_FP16_WARNING,))
    if spec is None and name != "float32":
        return DtypeChoice(name, f"{name} as requested; on the CPU it saves memory but is rarely faster")
    return DtypeChoice(name, f"{name} as requested; supported on {where}")


def decode_ceiling_tokens_per_s(weight_bytes, gpu, kv_bytes_per_token: float = 0) -> float:
    """Batch-1 decode roofline: every token reads all weights (plus its KV cache) once.

    tokens/s <= bandwidth / bytes read per token. Real engines reach 60-82% of it on big models.
    """
    positive(weight_bytes, "weight_bytes")
    positive(kv_bytes_per_token, "kv_bytes_per_token", allow_zero=True)
    spec = get_gpu(gpu)
    return spec.bandwidth_gbs * 1e9 / (weight_bytes + kv_bytes_per_token)


# --- the device in use -------------------------------------------------------------------------

@dataclass
class DeviceReport:
    """What `detect()` found. ``gpu`` is the catalog spec (or the simulated one) when known."""

    has_gpu: bool
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    total_gib: float | None
    free_gib: float | None
    bf16: bool | None
    torch_version: str | None
    cuda_version: str | None
    in_colab: bool
    simulated: bool = False
    gpu: GpuSpec | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def dtype(self) -> str:
        return pick_dtype(self.gpu) if self.gpu is not None else ("float32" if not self.has_gpu else "float16")

    def lines(self) -> list[str]:
        rows = []
        if self.has_gpu or self.simulated:
            tag = " (simulated: no GPU here)" if self.simulated else ""
            rows.append(f"GPU:                {self.gpu_name}{tag}")
            rows.append(f"Compute capability: {self.compute_capability[0]}.{self.compute_capability[1]}")
            free = "n/a" if self.free_gib is None else f"{self.free_gib:.2f} GiB"
            rows.append(f"Memory:             {self.total_gib:.2f} GiB total, {free} free")
            rows.append(f"bfloat16:           {'yes' if self.bf16 else 'no (use float16)'}")
            rows.append(f"Use dtype:          {self.dtype}")
        else:
            rows.append("GPU:                none")
        rows.append(f"torch:              {self.torch_version or 'not installed'}")
        rows.append(f"CUDA:               {self.cuda_version or 'none'}")
        rows.append(f"Colab:              {'yes' if self.in_colab else 'no'}")
        rows += [f"Note: {n}" for n in self.notes]
        return rows

    def __str__(self) -> str:
        return "\n".join(self.lines())


NO_GPU_ADVICE = (
    "No CUDA GPU is visible. On Colab choose Runtime > Change runtime type > T4 GPU, then rerun; "
    "everything here still runs on the CPU, slowly, and the GPU figures are simulated."
)


# A detected card whose total differs from its catalog entry by more than drivers move it (0.43 GiB between
# two A10G logs) is another memory size under the same name.
DETECTED_MEMORY_SLACK_GIB = 1.0


def detect(simulate=None) -> DeviceReport:
    """Report the device in use. With no GPU, ``simulate`` (e.g. "T4") fills in a catalog GPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    colab = in_colab()
    tv = getattr(torch, "__version__", None)
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        cc = (props.major, props.minor)
        try:
            spec = get_gpu(props.name)
        except ValueError:
            spec = None
        notes = [] if spec else [f"{props.name} is not in the catalog; figures come from the device itself"]
        if spec is not None and abs(total / GIB - spec.memory_gib) > DETECTED_MEMORY_SLACK_GIB:
            # one name, two memory sizes (the RTX 3060 comes with 12 GB and with 8 GB): plan what this card holds
            notes.append(f"{props.name} reports {total / GIB:.2f} GiB, the catalog's {spec.memory_gib:.2f}: "
                         "planning with what this card reports")
            spec = replace(spec, memory_gib=total / GIB)
        if spec is None:
            spec = GpuSpec(props.name, cc, total / GIB, 1.0, 1.0, "detected (bandwidth unknown)")
        return DeviceReport(True, props.name, cc, total / GIB, free / GIB, cc >= (8, 0), tv, cuda, colab,
                            gpu=spec, notes=notes)
    notes = [NO_GPU_ADVICE, f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"]
    if simulate is None:
        return DeviceReport(False, None, None, None, None, None, tv, cuda, colab, notes=notes)
    spec = get_gpu(simulate)
    return DeviceReport(False, spec.name, spec.compute_capability, spec.memory_gib, None, spec.bf16, tv, cuda,
                        colab, simulated=True, gpu=spec, notes=notes)


def _is_card(spec: GpuSpec, device_name: str) -> bool:
    """Whether the device torch names is the card ``spec`` plans: by name (a catalog key, its name or torch names),
    never by memory size (the L4 and the A10G, an A100 and an H100 80GB, an RTX 3070 and a 4060 hold the same)."""
    names = {_norm(n) for n in (spec.name, *spec.torch_names)}
    if _norm(device_name) in names:
        return True
    key = _lookup().get(_norm(device_name))
    return key is not None and GPUS[key] == spec


def other_gib_now(gpu=None, device: int | None = None, *, own_context: bool = True) -> float:
    """GiB already held on the GPU by others (``total - free`` from ``torch.cuda.mem_get_info``); 0.0 with no GPU.

    What ``plan_vllm(other_gib=...)`` / ``fit_vllm(other_gib=...)`` need on a person's own card (a desktop
    and a browser often hold a few hundred MiB to over 1 GiB). ``gpu`` (a catalog name or GpuSpec) is the card
    being planned: only visible devices of that model are read (by name), the most held on any of them (vLLM
    checks every rank's card); none of them present reads 0.0. ``device`` reads that one device instead
    (0.0 if it is another model than ``gpu``). The figure includes this process's CUDA context, which stays
    held while vLLM's engine runs in its own process; a caller that exits before vLLM starts (the command line)
    passes ``own_context=False`` to leave out the context this reading itself created (the cited
    ``cuda.context_mb``).
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0.0
    if not torch.cuda.is_available():
        return 0.0
    created = not torch.cuda.is_initialized()  # before the reading: mem_get_info creates this process's context
    spec = None if gpu is None else get_gpu(gpu)
    devices = range(torch.cuda.device_count()) if device is None else [device]
    held = []
    for d in devices:
        if spec is not None and not _is_card(spec, torch.cuda.get_device_name(d)):
            continue
        free, total = torch.cuda.mem_get_info(d)
        held.append((total - free) / GIB)
        if spec is None and device is None:
            break  # no card named: the current device, as before
    if not held:
        return 0.0
    gib = max(held)
    if created and not own_context:
        gib = max(0.0, gib - cited("cuda.context_mb").value / 1024)
    return gib


def recommendations(gpu) -> list[str]:
    """Plain advice for running this project's models on ``gpu``."""
    spec = get_gpu(gpu)
    dtype = pick_dtype(spec)
    out = [f"Load models in {dtype}" + ("" if spec.bf16 else " (no bfloat16 on this GPU: pass dtype='float16')")]
    if spec.compute_capability < (8, 0):
        out.append("FlashAttention-2 needs CC 8.0; PyTorch SDPA uses its memory-efficient kernel here")
    if spec.memory_gib < 16:
        orpheus_gib = covered_weight_gib(dtype if dtype != "float32" else "float16")["Orpheus 3B (LLM)"]
        out.append(f"Orpheus 3B in half precision needs {orpheus_gib:.1f} GiB of weights: "
                   "size vLLM's KV cache with colab_tts.kv_cache")
    if spec.memory_gib < 10:
        out.append("8 GB class: offload idle stages and cut diffusion steps (notebook 03)")
    return out


def catalog_rows() -> list[dict]:
    """The catalog as table rows (key, name, CC, memory, bandwidth, fp16 TFLOPS, bf16, dtype)."""
    return [
        {"key": k, "name": g.name, "cc": g.cc, "memory_gib": g.memory_gib, "bandwidth_gbs": g.bandwidth_gbs,
         "fp16_tflops": g.fp16_tflops, "bf16": g.bf16, "dtype": pick_dtype(g)}
        for k, g in GPUS.items()
    ]


# --- a first look: weights only (whether a system fits is colab_tts.systems.fit_table, by plan_vllm) ------

class _CoveredModels(Mapping):
    """{label: (parameters, source)}, read on first use from the bundled configs and the cited data."""

    def __getitem__(self, key):
        return covered_models()[key]

    def __iter__(self):
        return iter(covered_models())

    def __len__(self) -> int:
        return len(covered_models())


COVERED_MODELS = _CoveredModels()


def weights_fit_rows(dtype: str = "float16", gpus=None, models=None) -> list[dict]:
    """Weight size of each covered model in ``dtype`` against each GPU's memory (weights only, not a fit).

    The sizes are ``models.covered_weight_gib`` (``ModelSpec.weight_gib`` of the bundled configs, SNAC: its
    cited count), the figures ``colab_tts.systems.fit_table`` and the planner show; whether a system fits a GPU
    is that table's answer. ``models``: your own {label: (parameters, source)}, sized as parameters x bytes.
    """
    dtype = dtype_name(dtype)
    if models is None:
        sizes = covered_weight_gib(dtype)
    else:
        sizes = {label: params * DTYPE_BYTES[dtype] / GIB for label, (params, _source) in models.items()}
    specs = [get_gpu(g) for g in (gpus if gpus is not None else GPUS)]
    rows = []
    for model, gib in sizes.items():
        row = {"model": model, f"{dtype} GiB": gib}
        for spec in specs:
            row[_short(spec)] = f"{gib / spec.memory_gib:.0%}"
        rows.append(row)
    return rows


def _short(spec: GpuSpec) -> str:
    for key, g in GPUS.items():
        if g == spec:
            return key
    return spec.name
