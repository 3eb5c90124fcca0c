"""What every deploy setting takes, checked before any work (``systems.settings``, so ``plan``, ``deploy`` and
``python -m colab_tts.deploy ... --set`` alike): an unknown key, a wrong type, NaN/inf or a value outside the
range upstream declares is refused in one line naming the key, what it takes and a value that works, instead of
reaching upstream's call in the system's environment minutes later.

Types and ranges as upstream declares them at the pinned commits:

- GPT-SoVITS, RVC-Boss/GPT-SoVITS @48b1a01: the types of ``TTS.run``'s docstring and reads
  (GPT_SoVITS/TTS_infer_pack/TTS.py lines 997-1068); ``text_lang``/``prompt_lang`` asserted to be among
  ``TTS_Config.v2_languages`` (lines 276, 1115-1117; the runner builds version v2); ``seed`` goes through
  ``set_seed``'s ``int(seed)`` into ``np.random.seed`` (line 194: -1 or 0 .. 2**32-1); the ranges of upstream's
  own UI for the same keys (GPT_SoVITS/inference_webui_fast.py lines 374-395: batch_size 1-200, sample_steps
  4/8/16/32/64/128, fragment_interval 0.01-1, speed_factor 0.6-1.65, top_k 1-100, top_p 0-1, temperature 0-1,
  repetition_penalty 0-2); ``text_split_method`` one of the ``register_method`` names cut0-cut5
  (GPT_SoVITS/TTS_infer_pack/text_segmentation_method.py); a reference of 3-10 s (TTS.py lines 814-816).
- IndexTTS-2, index-tts/index-tts @ee40fa7: ``IndexTTS2.__init__`` and ``infer`` (indextts/infer_v2.py
  lines 36-70, 371); ``max_text_tokens_per_segment`` from 20 (webui.py line 918).
- MetaVoice-1B, metavoiceio/metavoice-src @de3fa21: ``TTS.__init__`` (``quantisation_mode`` None/"int4"/"int8")
  and ``synthesise`` (fam/llm/fast_inference.py lines 41-50, 111-118); ``top_p`` 0.9-1.0 and
  ``guidance_scale`` 1.0-3.0, the ranges its app maps its sliders onto (app.py lines 30-37), text up to 220
  characters (app.py line 20, ``MAX_CHARS``).

A file a user names (a reference clip) must exist when the plan is made; a relative name is taken from the
current folder, as the user means it (the worker runs inside upstream's clone, where it would mean another file).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import wave
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    takes: str  # what the setting takes, in words ("an integer from 1 to 100")
    check: Callable  # value -> the value to use; raises TypeError (wrong kind) or ValueError (out of range)
    example: object  # a value that works, for the fix
    text: bool = False  # any text is a value (--set keeps what was typed: "1984" is not the number)
    options: tuple = ()  # one_of's choices: a refused "JA" or "ja " is answered with the "ja" meant


def _shown(value) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text.encode("utf-8", "backslashreplace").decode()


def _number(value, integer: bool):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError
    if not integer and not math.isfinite(value):
        raise ValueError
    return value


def integer(low=None, high=None, also=()) -> Rule:
    def check(value):
        _number(value, integer=True)
        if value in also:
            return value
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError
        return value

    span = (f"from {low} to {high}" if low is not None and high is not None
            else f"of at least {low}" if low is not None else f"of at most {high}")
    extra = "".join(f" or {a}" for a in also)
    return Rule(f"an integer {span}{extra}", check, low if low is not None else high)


def number(low, high=None, *, low_open=False) -> Rule:
    def check(value):
        _number(value, integer=False)
        if value < low or (low_open and value == low) or (high is not None and value > high):
            raise ValueError
        return value

    if high is None:
        span = f"above {low}" if low_open else f"of at least {low}"
    else:
        span = f"from {low} to {high}" + (f" ({low} excluded)" if low_open else "")
    return Rule(f"a finite number {span}", check, high if high is not None else low + 1)


def one_of(*options, example=None) -> Rule:
    def check(value):
        if not any(value == o and type(value) is type(o) for o in options):
            raise TypeError if not any(isinstance(value, type(o)) for o in options) else ValueError
        return value

    return Rule("one of " + ", ".join(_plain(o) for o in options), check, options[0] if example is None else example,
                options=options)


def _plain(value) -> str:
    """As ``--set`` reads it (JSON): null, true, "en", 15."""
    return json.dumps(value)


def flag() -> Rule:
    def check(value):
        if not isinstance(value, bool):
            raise TypeError
        return value

    return Rule("true or false", check, True)


def text(max_chars: int | None = None, empty: bool = False) -> Rule:
    def check(value):
        if not isinstance(value, str):
            raise TypeError
        if (not empty and not value.strip()) or "\0" in value or (max_chars and len(value) > max_chars):
            raise ValueError
        value.encode()  # undecodable argv bytes (surrogates): UnicodeEncodeError is a ValueError
        return value

    what = "text" if empty else "non-empty text"
    return Rule(what + (f" of at most {max_chars} characters" if max_chars else ""), check, "Hello there.",
                text=True)


def _path_text(value) -> str:
    if not isinstance(value, str):
        raise TypeError
    if not value.strip() or "\0" in value:
        raise ValueError
    value.encode()
    return value


def audio_file(min_s: float | None = None, max_s: float | None = None, optional: bool = True,
               urls: bool = False) -> Rule:
    """A clip the user names: an existing file (absolute from here on); a .wav's length checked when bounded."""

    def check(value):
        if value is None and optional:
            return None
        if urls and isinstance(value, str) and re.match(r"https?://\S+$", value):
            return value
        path = os.path.abspath(os.path.expanduser(_path_text(value)))
        if not os.path.isfile(path):
            raise ValueError
        if path.lower().endswith(".wav") and (min_s or max_s):
            try:
                with wave.open(path, "rb") as w:
                    seconds = w.getnframes() / w.getframerate()
            except (wave.Error, EOFError, OSError, ZeroDivisionError):
                raise ValueError from None
            if (min_s and seconds < min_s) or (max_s and seconds > max_s):
                raise ValueError
        return path

    span = (f" of {min_s:g}-{max_s:g} s" if min_s and max_s else f" of at least {min_s:g} s" if min_s else "")
    what = f"the path of an existing audio file{span}" + (" or an http(s) URL" if urls else "")
    return Rule(what + (", or null for the runner's reference clip" if optional else ""), check,
                "/content/my_voice.wav")


def inside_clone(kind: str) -> Rule:
    """A path upstream opens relative to its clone (the worker's folder): an absolute one must exist."""

    def check(value):
        text_ = _path_text(value)
        if os.path.isabs(text_) and not (os.path.isdir(text_) if kind == "folder" else os.path.isfile(text_)):
            raise ValueError
        return text_

    return Rule(f"a {kind} path, relative to upstream's clone or an existing absolute one", check,
                "checkpoints" if kind == "folder" else "checkpoints/config.yaml")


def device(*, gpu_index: bool) -> Rule:
    pattern = r"cpu|cuda(:\d+)?" if gpu_index else r"cpu|cuda"

    def check(value):
        if not isinstance(value, str):
            raise TypeError
        if not re.fullmatch(pattern, value):
            raise ValueError
        return value

    return Rule('"cuda", "cuda:N" or "cpu"' if gpu_index else '"cuda" or "cpu"', check,
                "cuda:0" if gpu_index else "cuda")


def hub_repo() -> Rule:
    def check(value):
        if not isinstance(value, str):
            raise TypeError
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}", value) or ".." in value:
            raise ValueError
        return value

    return Rule('a Hugging Face model id "owner/name"', check, "metavoiceio/metavoice-1B-v0.1")


def optional(rule: Rule) -> Rule:
    return Rule(rule.takes + " or null", lambda v: None if v is None else rule.check(v), rule.example)


# GPT-SoVITS TTS.run's keys (the runner passes them, and each variant may change them)
V2_LANGUAGES = ("auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko")
TTS_RUN = {
    "text": text(),
    "text_lang": one_of(*V2_LANGUAGES, example="en"),
    "ref_audio_path": audio_file(3.0, 10.0),
    "aux_ref_audio_paths": None,  # a list of clips: checked in check() below
    "prompt_text": text(empty=True),
    "prompt_lang": one_of(*V2_LANGUAGES, example="en"),
    "top_k": integer(1, 100),
    "top_p": number(0, 1, low_open=True),
    "temperature": number(0, 1, low_open=True),
    "text_split_method": one_of(*(f"cut{i}" for i in range(6)), example="cut1"),
    "batch_size": integer(1, 200),
    "batch_threshold": number(0, 1),
    "split_bucket": flag(),
    "speed_factor": number(0.6, 1.65),
    "fragment_interval": number(0.01, 1),
    "seed": integer(0, 2**32 - 1, also=(-1,)),
    "parallel_infer": flag(),
    "repetition_penalty": number(0, 2),
    "sample_steps": one_of(4, 8, 16, 32, 64, 128, example=32),
    "super_sampling": flag(),
    "return_fragment": flag(),
    "streaming_mode": flag(),
    "overlap_length": integer(0),
    "min_chunk_length": integer(1),
    "fixed_length_chunk": flag(),
}

RULES = {
    "gpt-sovits": {
        "device": device(gpu_index=False), "is_half": flag(),
        **{k: TTS_RUN[k] for k in ("text", "text_lang", "ref_audio_path", "prompt_text", "prompt_lang", "top_k",
                                   "seed")},
        "variants": None,  # a list of {"label": ..., TTS.run key: value}: checked in check() below
        "compare_greedy": flag(),
        "greedy_max_new_tokens": integer(1, 1500),  # upstream's own cap (t2s_model.py @48b1a01)
    },
    "indextts2": {
        "cfg_path": inside_clone("file"), "model_dir": inside_clone("folder"), "use_fp16": flag(),
        "device": optional(device(gpu_index=True)), "use_cuda_kernel": optional(flag()), "use_deepspeed": flag(),
        "use_qwen_emo": flag(), "spk_audio_prompt": audio_file(), "text": text(),
        "max_text_tokens_per_segment": integer(20),  # up to the config's gpt.max_text_tokens
        "memory_cap_gib": optional(number(0, low_open=True)), "offload_idle_stages": flag(),
        "diffusion_steps": integer(1),
    },
    "metavoice": {
        "model_name": hub_repo(), "seed": integer(0, 2**32 - 1), "quantisation_mode": one_of(None, "int8", "int4"),
        "text": text(max_chars=220), "spk_ref_path": audio_file(optional=False, urls=True),
        "top_p": number(0.9, 1.0), "guidance_scale": number(1.0, 3.0), "temperature": number(0, low_open=True),
        "float16_on_turing": flag(),
    },
}
# MetaVoice's default speaker clip is upstream's own assets/bria.mp3, relative to its clone: not the user's file
CLONE_DEFAULTS = {("metavoice", "spk_ref_path"): "assets/bria.mp3"}


def takes_text(system: str, key: str) -> bool:
    """Whether ``system``'s setting ``key`` is free text (unknown systems and keys: False; refused elsewhere)."""
    rule = RULES.get(system, {}).get(key) if isinstance(system, str) else None
    return bool(rule and rule.text)


def refuse(system: str, key: str, value, rule: Rule, err: Exception, where: str = "", example=None) -> Exception:
    """The one-line error: the key, what it takes and a value that works."""
    kind = TypeError if isinstance(err, TypeError) else ValueError
    example = rule.example if example is None else example
    if where:  # inside a variant or a call: no --set of its own
        fix = f"fix: give e.g. {json.dumps(key)}: {_plain(example)} there, or leave it out for upstream's default"
    else:
        fix = (f"fix: give e.g. {key}={_plain(example)} (CLI: --set {shlex.quote(f'{key}={_cli(example)}')}), "
               "or leave it out for the default")
    return kind(f"{system} setting {where}{key}={_shown(value)} is not accepted: {key} takes {rule.takes}; {fix}")


def _cli(value) -> str:
    """How ``--set`` is typed: JSON, except a string that JSON would not read as one goes as it is."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return _plain(value)


def _check_one(system: str, key: str, value, rule: Rule, where: str = "", example=None):
    try:
        return rule.check(value)
    except (TypeError, ValueError) as err:  # UnicodeEncodeError is a ValueError
        # upstream compares exactly, so the value stays refused, but the fix names the choice meant
        near = [o for o in rule.options if isinstance(o, str) and isinstance(value, str)
                and o.lower() == value.strip().lower()]
        raise refuse(system, key, value, rule, err, where, near[0] if near else example) from None


def _variants(system: str, value) -> list:
    takes = Rule('a non-empty list of {"label": "...", <TTS.run key>: value} objects with distinct labels',
                 None, [{"label": "upstream defaults"}])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise refuse(system, "variants", value, takes, TypeError())
    labels = [v.get("label") for v in value]
    if not value or not all(isinstance(la, str) and la.strip() for la in labels) or len(set(labels)) != len(labels):
        raise refuse(system, "variants", value, takes, ValueError())
    out = []
    for i, variant in enumerate(value):
        checked = {"label": variant["label"]}
        for key, v in variant.items():
            if key == "label":
                continue
            if key not in TTS_RUN:
                raise ValueError(f"{system} setting variants[{i}] has the key {_shown(key)}, which upstream's TTS.run "
                                 f"does not read; its keys: {', '.join(TTS_RUN)}")
            checked[key] = _list_of_clips(system, v) if key == "aux_ref_audio_paths" else \
                _check_one(system, key, v, TTS_RUN[key], where=f"variants[{i}].")
        out.append(checked)
    return out


def _list_of_clips(system: str, value) -> list:
    rule = audio_file(3.0, 10.0, optional=False)
    if not isinstance(value, list):
        raise refuse(system, "aux_ref_audio_paths", value, Rule("a list of " + rule.takes, None, []), TypeError())
    return [_check_one(system, "aux_ref_audio_paths", v, rule) for v in value]


def check(system: str, settings: dict, defaults: dict) -> dict:
    """Every one of a system's ``settings`` (defaults merged, unknown keys already refused) checked, with a
    clip's path made absolute; or one TypeError/ValueError whose fix is the default where that works."""
    rules = RULES[system]
    out = dict(settings)
    for key, value in settings.items():
        if (system, key) in CLONE_DEFAULTS and CLONE_DEFAULTS[system, key] == value:
            continue
        if key == "variants":
            out[key] = _variants(system, value)
            continue
        default = defaults.get(key)
        example = default if default is not None and _plain(default) != _plain(value) and len(_plain(default)) <= 40 \
            else None
        out[key] = _check_one(system, key, value, rules[key], example=example)
    return out


# the upstream calls whose keyword arguments are settings of the same name (systems._*_calls)
CALL_RULES = {("gpt-sovits", "TTS.run"): TTS_RUN, ("indextts2", "IndexTTS2"): RULES["indextts2"],
              ("indextts2", "IndexTTS2.infer"): RULES["indextts2"], ("metavoice", "TTS"): RULES["metavoice"],
              ("metavoice", "TTS.synthesise"): RULES["metavoice"]}
# clips the runner itself fetches into the plan's out folder before the worker starts: not there yet
_FETCHED = {"ref_audio_path", "spk_audio_prompt", "spk_ref_path", "aux_ref_audio_paths"}


# the upstream keyword arguments that say where it writes (systems._indextts2_calls, _metavoice_calls)
_WRITES = {"output_path": "file", "output_dir": "folder"}


def _written_inside(call: str, key: str, value, out: str) -> None:
    """Where upstream writes must lie inside the plan's output folder: an edited ``output_path`` naming a file
    of the user's elsewhere would be overwritten, and no stopped run would clean up there."""
    root, text_ = os.path.realpath(out), _path_text(value)
    path = os.path.realpath(text_)  # upstream runs in its clone: a relative name (or "~") would be taken there
    if not os.path.isabs(text_) or (
            not (path == root and _WRITES[key] == "folder") and not path.startswith(root + os.sep)):
        raise ValueError(f"{call}: {key}={_shown(value)} is outside the plan's output folder {out}: upstream "
                         f"would write there; give a {_WRITES[key]} inside it (e.g. {os.path.join(out, 'x.wav')}) "
                         "or run with out= set to the folder you want")


def check_calls(system: str, calls, out: str | None = None) -> None:
    """The keyword arguments of a plan's upstream calls (a plan edited by hand before ``deploy(plan=...)``),
    each checked by the rule of the setting of the same name, and where upstream writes kept inside ``out``
    (the plan's output folder); one TypeError/ValueError otherwise."""
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("kwargs"), dict)
                                              for c in calls):
        raise TypeError("a plan's calls are a list of {\"target\": ..., \"kwargs\": {...}}: make the plan with "
                        "colab_tts.deploy.plan() and edit its values")
    for call in calls:
        rules = CALL_RULES.get((system, call.get("target")), {})
        for key, value in call["kwargs"].items():
            if key in _WRITES and out is not None:
                try:
                    _written_inside(call.get("target"), key, value, out)
                except TypeError:
                    raise TypeError(f"{call.get('target')}: {key} is a path (text), got {_shown(value)}") from None
            if key in rules and rules[key] is not None and key not in _FETCHED:
                _check_one(system, key, value, rules[key], where=f"{call['target']}: ")
