"""IndexTTS-2 in its own environment: peak memory per stage, idle stages offloaded, under a cap.

Imported only by the worker inside the IndexTTS-2 environment (``locks/indextts2.txt``, index-tts/index-tts
@ee40fa7 installed without its dependencies, Python 3.11). The worker caps the CUDA allocator first (``memory_cap_gib``: an 8 GB card
emulated on a bigger GPU). After ``IndexTTS2(...)`` is built this module wraps the methods
``infer`` reaches on each stage (indextts/infer_v2.py @ee40fa7) so that each is timed and its peak
measured, and, with ``offload_idle_stages``, moved to the GPU only while it runs
(``colab_tts.memory.on_accelerator``). ``diffusion_steps`` is hard-coded to 25 in ``infer``
(lines 656-657): the wrapper of ``s2mel.models['cfm'].inference`` replaces its ``n_timesteps``.
"""

from __future__ import annotations

import functools

STAGES: list = []

# stage -> (attribute path on IndexTTS2, every method infer_v2.py @ee40fa7 calls on it); a stage is only
# offloaded when every entry point is listed (semantic_codec.quantizer.vq2emb and the small s2mel
# length_regulator / gpt_layer stay resident).
STAGE_METHODS = {
    "gpt": ("gpt", ("merge_emovec", "inference_speech", "forward"), True),
    "semantic_model (w2v-BERT 2.0)": ("semantic_model", ("forward",), True),
    "semantic_codec": ("semantic_codec", ("quantize",), False),
    "campplus": ("campplus_model", ("forward",), True),
    "s2mel cfm": ("s2mel.models.cfm", ("inference",), True),
    "bigvgan": ("bigvgan", ("forward",), True),
}


def import_upstream(plan: dict) -> dict:
    from indextts.infer_v2 import IndexTTS2  # upstream, installed with --no-deps -e beside the lock

    return {"IndexTTS2": IndexTTS2}


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class OneStageAtATime:
    """Like ``colab_tts.memory.model_offload`` for methods other than forward: running a stage moves
    it to the GPU and the previously resident offloaded stage back to host memory."""

    def __init__(self):
        self.resident = None
        self.depth = 0

    def enter(self, module):
        from colab_tts.memory import to_accelerator, to_host

        self.depth += 1
        if self.depth == 1 and self.resident is not module:
            if self.resident is not None:
                to_host(self.resident)
            to_accelerator(module)
            self.resident = module

    def exit(self):
        self.depth -= 1


def _wrap(stage: str, module, name: str, offloader, steps):
    from .peaks import stage_peak

    method = getattr(module, name)

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if steps is not None and name == "inference" and len(args) >= 6:
            args = (*args[:5], steps, *args[6:])  # (mu, x_lens, prompt, style, f0, n_timesteps, ...)
        outer = offloader is None or offloader.depth == 0
        measure = stage_peak() if outer else _Quiet()
        with measure as row:
            if offloader is not None:
                offloader.enter(module)
            try:
                out = method(*args, **kwargs)
            finally:
                if offloader is not None:
                    offloader.exit()
        if outer:
            STAGES.append({"stage": stage, "method": name, **row})
        return out

    return wrapper


class _Quiet:
    def __enter__(self):
        return {}

    def __exit__(self, *exc):
        return False


def after_build(name: str, obj, plan: dict) -> None:
    if name != "IndexTTS2":
        return
    from colab_tts.memory import module_bytes, to_host
    from colab_tts.units import gib

    s = plan["settings"]
    offloader = OneStageAtATime() if s.get("offload_idle_stages") else None
    steps = s.get("diffusion_steps")
    steps = None if steps == 25 else steps
    sizes = {}
    for stage, (path, methods, can_offload) in STAGE_METHODS.items():
        module = _get(obj, path)
        sizes[stage] = round(gib(module_bytes(module)), 3)
        stage_offloader = offloader if can_offload else None
        if stage_offloader is not None:
            to_host(module)
        for method in methods:
            setattr(module, method, _wrap(stage, module, method, stage_offloader, steps))
    STAGES.append({"stage": "weights by stage (GiB)", "sizes": sizes})


def audio(call: dict, value, out, index: int):
    """``infer`` wrote ``output_path`` itself and returned it."""
    from .protocol import describe_wav

    return describe_wav(call["kwargs"]["output_path"])
