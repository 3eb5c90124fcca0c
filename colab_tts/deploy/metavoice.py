"""MetaVoice-1B in its own environment (Python 3.11, torch 2.2.1), in float16 on a GPU without bf16.

Imported only by the worker. What upstream does (metavoiceio/metavoice-src @de3fa21):
``fam/llm/utils.py`` ``get_default_dtype`` returns "float16" for compute capability <= 7.x, and
``TTS`` builds the first stage with that precision, but ``fam/llm/fast_inference_utils.py``
``_load_model`` still runs ``model.to(device=device, dtype=torch.bfloat16)``; ``torch.compile``
(``mode="max-autotune"``) of ``decode_one_token`` then emits bf16 PTX that ptxas refuses on a T4
(metavoice-src issue #128). The patch here, applied from outside before ``TTS`` is built: the name
``torch`` inside ``fam.llm.fast_inference_utils`` is replaced by a view of torch whose ``bfloat16``
is ``float16`` - on GPUs without bf16 only. Upstream's files are not changed.

Stages are timed and measured by wrapping the names ``fam.llm.fast_inference`` calls: ``build_model``
(first stage + speaker encoder + compile), ``Model`` (second stage), ``get_enhancer`` (DeepFilterNet),
``main`` (first-stage generation); multi-band diffusion is built when ``fam.llm.decoders`` is imported.
"""

from __future__ import annotations

import functools
import shutil
import types
from pathlib import Path

from .._files import atomic_path

STAGES: list = []


class _TorchWithoutBf16(types.ModuleType):
    """torch, except that ``bfloat16`` is ``float16`` (for a module that hard-codes the cast)."""

    def __init__(self, torch):
        super().__init__("torch")
        self._torch = torch

    def __getattr__(self, name):
        if name == "bfloat16":
            return self._torch.float16
        return getattr(self._torch, name)


def needs_float16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) < (8, 0)


def _stage(name: str, fn):
    from .peaks import stage_peak

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with stage_peak() as row:
            out = fn(*args, **kwargs)
        STAGES.append({"stage": name, **row})
        return out

    return wrapper


def import_upstream(plan: dict) -> dict:
    import torch

    s = plan["settings"]
    if s.get("quantisation_mode") == "int4" and needs_float16():
        raise ValueError("quantisation_mode='int4' uses torch's _weight_int4pack_mm, a bfloat16 kernel for "
                         "compute capability >= 8.0: on this GPU use None (float16) or 'int8'")
    from .peaks import stage_peak

    with stage_peak() as row:
        import fam.llm.decoders  # noqa: F401  builds MultiBandDiffusion.get_mbd_24khz(bw=6) at import
    STAGES.append({"stage": "multi-band diffusion (imported with fam.llm.decoders)", **row})
    import fam.llm.fast_inference as fi
    import fam.llm.fast_inference_utils as fiu

    if s.get("float16_on_turing") and needs_float16():
        fiu.torch = _TorchWithoutBf16(torch)
        STAGES.append({"stage": "patch", "what": "fam.llm.fast_inference_utils: torch.bfloat16 -> float16"})
    fi.build_model = _stage("first stage GPT + speaker encoder (build_model, compile, warm-up)", fi.build_model)
    fi.Model = _stage("second stage (non-causal transformer)", fi.Model)
    fi.get_enhancer = _stage("DeepFilterNet (get_enhancer)", fi.get_enhancer)
    fi.main = _stage("first-stage generation (main)", fi.main)
    return {"TTS": fi.TTS}


def after_build(name: str, obj, plan: dict) -> None:
    if name == "TTS":
        obj.llm_second_stage = _stage("second stage + multi-band diffusion (decode)", obj.llm_second_stage)
        obj.enhancer = _stage("DeepFilterNet (enhance)", obj.enhancer)


def audio(call: dict, value, out, index: int):
    """``synthesise`` returns the path of the wav it wrote: copied into ``out``."""
    src = Path(value)
    dst = Path(out) / f"metavoice_{index}.wav"
    if src.resolve() != dst.resolve():
        with atomic_path(dst) as tmp:  # a copy cut short never stands under the final name
            shutil.copy2(src, tmp)
    from .protocol import describe_wav

    return describe_wav(dst)
