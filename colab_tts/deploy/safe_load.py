"""In the worker, before upstream is imported: every ``torch.load`` loads with ``weights_only=True``.

Upstream unpickles checkpoints with ``weights_only=False``, so a ``.ckpt``/``.pth`` a user points the runner at
(an edited plan's ``t2s_weights_path``/``vits_weights_path``, an IndexTTS-2 ``model_dir``, a MetaVoice
``model_name``) could run any code while it loads:

- RVC-Boss/GPT-SoVITS @48b1a01: GPT_SoVITS/TTS_infer_pack/TTS.py line 599 (``init_t2s_weights``) and
  GPT_SoVITS/process_ckpt.py lines 137-138 (``load_sovits_new``, called by ``init_vits_weights``), also
  GPT_SoVITS/sv.py line 13 and TTS.py line 656 (v2Pro speaker model, v4 vocoder).
- metavoiceio/metavoice-src @de3fa21 (torch 2.2.1, whose default is ``weights_only=False``):
  fam/llm/fast_inference_utils.py line 243 (the first stage), fam/llm/inference.py line 105 (the second stage),
  fam/quantiser/audio/speaker_encoder/model.py line 45.
- index-tts/index-tts @ee40fa7 calls ``torch.load`` without ``weights_only`` (indextts/infer_v2.py lines 134,
  170, 196, 200; indextts/utils/checkpoint.py line 23; indextts/s2mel/modules/commons.py): safe under its
  torch 2.8 default (True since torch 2.6) unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set, which the
  worker's environment clears (``env.worker_env``).

``guard_torch_load`` replaces ``torch.load`` (and ``torch.serialization.load``) in the worker process by one that
always passes ``weights_only=True``: tensors, numbers, strings, containers and the classes listed in
``SAFE_GLOBALS`` only. A file naming anything else is refused before any of it runs, in one line naming the file
and the object. GPT-SoVITS writes its SoVITS files with a 2-byte version header in place of the zip's "PK"
(process_ckpt.py lines 30-38); ``load_sovits_new`` restores it before calling ``torch.load``, so that path is
covered too.
"""

from __future__ import annotations

import functools
import re


class HParams:
    """A data-only stand-in for GPT-SoVITS's ``utils.HParams`` (GPT_SoVITS/utils.py lines 324-353 @48b1a01),
    the config object its SoVITS ``.pth`` files pickle (process_ckpt.py ``savee``: ``opt["config"] = hps``; a
    weights-only load of a trained one stops at "GLOBAL utils.HParams", Artrajz/vits-simple-api issue #218):
    attributes read as items. Registered under upstream's pickled name, so a weights-only load rebuilds it
    without importing upstream's module."""

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()

    def values(self):
        return self.__dict__.values()

    def __len__(self):
        return len(self.__dict__)

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return repr(self.__dict__)


# per system: (class, the name the checkpoint's pickle gives it); only data holders, never a callable that acts
SAFE_GLOBALS = {"gpt-sovits": ((HParams, "utils.HParams"), (HParams, "GPT_SoVITS.utils.HParams"))}


class UnsafeCheckpointError(ValueError):
    """A checkpoint that names a Python object a weights-only load does not build (it could run code)."""


def _name(f) -> str:
    return str(getattr(f, "name", f)) if not hasattr(f, "getvalue") else "a checkpoint upstream read into memory"


def _refusal(f, err: Exception) -> UnsafeCheckpointError:
    named = re.search(r"GLOBAL ([\w.]+)", str(err))
    what = f"the Python object {named.group(1)}" if named else "Python objects other than tensors, numbers and strings"
    return UnsafeCheckpointError(
        f"refused to load {_name(f)}: it names {what}, and unpickling that could run code; the runner loads only "
        "tensors, numbers, strings and containers (torch.load weights_only=True). Use the original checkpoint "
        "from its publisher, or re-save yours as tensors (torch.save(model.state_dict(), path) or safetensors)")


def guard_torch_load(system: str | None = None):
    """Make this process's ``torch.load`` weights-only whatever its caller asks; returns the original."""
    import pickle

    import torch
    import torch.serialization as serialization

    original = getattr(torch.load, "__colab_tts_original__", torch.load)
    add = getattr(serialization, "add_safe_globals", None)  # torch >= 2.4; MetaVoice's 2.2.1 has the defaults only
    for entry in SAFE_GLOBALS.get(system, ()) if add is not None else ():  # without it: the defaults only
        try:
            add([entry])
        except TypeError:  # (class, name) pairs arrived in a later torch: the class under its own name
            add([entry[0]])

    @functools.wraps(original)
    def load(f, map_location=None, pickle_module=None, *, weights_only=None, **kwargs):
        try:
            return original(f, map_location=map_location, weights_only=True, **kwargs)
        except pickle.UnpicklingError as err:
            raise _refusal(f, err) from None

    load.__colab_tts_original__ = original
    torch.load = serialization.load = load
    return original


def restore_torch_load(original) -> None:
    """Undo ``guard_torch_load`` (``original``: what it returned)."""
    import torch
    import torch.serialization as serialization

    torch.load = serialization.load = original
