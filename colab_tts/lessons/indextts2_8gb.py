"""Notebook 03 on a GPU: real IndexTTS-2 through the deploy runner, measured, and the 8 GB recipe from it.

The kernel imports no upstream code: it builds runner plans (``colab_tts.deploy.plan``), runs them
(``colab_tts.deploy.deploy``: IndexTTS-2's own uv environment, index-tts/index-tts at its pinned commit)
and reads the worker's ``result.json``. Every figure here is *measured* by the worker on
``result["device"]`` with ``track_peak`` (CUDA's allocator statistics: tensors, not the CUDA context).

The runner builds ``IndexTTS2`` once per run, and ``use_fp16``, ``use_qwen_emo``, the offload hooks and
the diffusion steps are all fixed when it is built, so each of those needs a run of its own (the weights
load again each time); ``max_text_tokens_per_segment`` is an argument of ``infer``, so one run covers
several segment lengths as extra ``infer`` calls in the same plan. ``SWEEP`` is therefore four runs,
each changing one thing from the one before.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from colab_tts import hardware
from colab_tts._checks import fraction
from colab_tts.deploy import plan as deploy_plan

from .diffusion_8gb import Recipe

UPSTREAM_STEPS = 25  # index-tts/index-tts indextts/infer_v2.py @ee40fa7 line 656 (hard-coded)
BUILD_SETTINGS = ("use_fp16", "use_qwen_emo", "offload_idle_stages", "diffusion_steps")
RUN_COLUMNS = ("run", *BUILD_SETTINGS, "max_text_tokens_per_segment", "weights_gib", "total_peak_gib", "infer_s",
               "audio_s")  # a summary row without the device (tables name it in their title)


@dataclass(frozen=True)
class Setting:
    """One runner run: a short name for tables and the runner settings it changes."""

    name: str
    overrides: dict


# each changes one thing from the one before (emotion and offload together: the emotion model's cost is
# the difference in weights held after the build, before the hooks offload anything); no cap, so each
# shows what it needs, not whether it fits
SWEEP = (
    Setting("fp32 + emotion (upstream)",
            {"use_fp16": False, "use_qwen_emo": True, "offload_idle_stages": False, "diffusion_steps": 25}),
    Setting("use_fp16",
            {"use_fp16": True, "use_qwen_emo": True, "offload_idle_stages": False, "diffusion_steps": 25}),
    Setting("fp16, no emotion, offload",
            {"use_fp16": True, "use_qwen_emo": False, "offload_idle_stages": True, "diffusion_steps": 25}),
    Setting("... and 10 steps",
            {"use_fp16": True, "use_qwen_emo": False, "offload_idle_stages": True, "diffusion_steps": 10}),
)


def plan_table(plan: dict) -> list[dict]:
    """The plan's upstream calls as rows: target (and label) and the names of the kwargs the runner passes."""
    return [{"call": c["target"] + (f" [{c['label']}]" if c.get("label") else ""),
             "kwargs": ", ".join(c["kwargs"])} for c in plan["calls"]]


def sweep_plan(overrides: dict | None, texts: dict, segments=(120,), workdir="colab_tts_deploy", out=None,
               memory_cap_gib=None) -> dict:
    """An IndexTTS-2 plan with one ``infer`` call per (text, segment length), all on one build.

    ``texts``: name -> text; ``segments``: values of ``max_text_tokens_per_segment``. Each call writes its
    own wav (``indextts2_<name>_<segment>.wav``) and is labelled ``"<name>, <segment> tokens"``.
    """
    if not isinstance(texts, dict) or not texts or not all(isinstance(t, str) and t for t in texts.values()):
        raise ValueError("texts must be a dict of name -> non-empty text, e.g. {'short': 'Hello there.'}")
    segments = tuple(segments)
    if not segments or not all(isinstance(n, int) and n > 0 for n in segments):
        raise ValueError(f"segments must be positive token counts (max_text_tokens_per_segment), got {segments}")
    p = deploy_plan("indextts2", {**(overrides or {}), "memory_cap_gib": memory_cap_gib},
                    workdir=str(Path(workdir).resolve()), out=str(Path(out).resolve()) if out else None)
    build, infer = p["calls"]
    calls = [build]
    for name, text in texts.items():
        for n in segments:
            call = copy.deepcopy(infer)
            call["label"] = f"{name}, {n} tokens"
            call["kwargs"].update(text=text, max_text_tokens_per_segment=n,
                                  output_path=f"{p['out']}/indextts2_{name}_{n}.wav")
            calls.append(call)
    p["calls"] = calls
    return p


def summary(setting: Setting, result: dict) -> list[dict]:
    """One row per segment length of a run (its calls labelled by ``sweep_plan``): the build settings, the
    weights it holds after the build, the allocator peak (the build and that length's calls), infer seconds."""
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be an indextts2_8gb.Setting (e.g. SWEEP[0]), got {type(setting).__name__}")
    calls = result["calls"]
    if not all("total_peak_gib" in c for c in calls):
        raise ValueError(f"run {setting.name!r} has no CUDA peaks (it ran on {result.get('device')}): "
                         "the sweep needs a GPU")
    build = next(c for c in calls if "." not in c["target"])
    by_segment: dict = {}
    for c in calls:
        found = re.search(r", (\d+) tokens$", c.get("label", ""))
        if "." in c["target"] and found:
            by_segment.setdefault(int(found.group(1)), []).append(c)
    if not by_segment:
        raise ValueError(f"run {setting.name!r} has no infer calls labelled by sweep_plan")
    rows = []
    for n, infers in by_segment.items():
        rows.append({"run": setting.name, "device": result["device"], **{k: setting.overrides[k] for k in BUILD_SETTINGS},
                     "max_text_tokens_per_segment": n, "weights_gib": build.get("held_gib"),
                     "total_peak_gib": max(c["total_peak_gib"] for c in [build, *infers]),
                     "infer_s": round(sum(c["seconds"] for c in infers), 2),
                     "audio_s": round(sum((c.get("audio") or {}).get("seconds", 0) for c in infers), 2)})
    return rows


def summaries(results: dict, sweep=SWEEP) -> list[dict]:
    """``summary`` rows of every run in ``results`` (run name -> result), in the sweep's order."""
    return [row for setting in sweep if setting.name in results for row in summary(setting, results[setting.name])]


def stage_table(results: dict) -> list[dict]:
    """Rows: each stage's weights (GiB) and, per run, its largest peak above the level at its start.

    ``results``: run name -> result. With offload the stage's own weights come in inside the stage, so
    they are part of its peak there; resident, they are already held. The last row is each run's
    allocator peak over all its calls (what the card must hold).
    """
    rows: dict = {}
    for name, result in results.items():
        for row in result.get("stages", []):
            if "sizes" in row:
                for stage, gib in row["sizes"].items():
                    rows.setdefault(stage, {"stage": stage})["weights_gib"] = gib
            elif "peak_gib" in row:
                r = rows.setdefault(row["stage"], {"stage": row["stage"]})
                r[name] = max(r.get(name, 0.0), row["peak_gib"])
    total = {"stage": "total (allocator peak, all calls)"}
    for name, result in results.items():
        total[name] = max((c.get("total_peak_gib", 0.0) for c in result["calls"]), default=0.0)
    return [*rows.values(), total]


def call_table(result: dict) -> list[dict]:
    """Per call: seconds, peak above the level at entry, allocator peak, audio seconds, real-time factor."""
    rows = []
    for c in result["calls"]:
        audio = c.get("audio") or {}
        rows.append({"call": c["target"] + (f" [{c['label']}]" if c.get("label") else ""), "seconds": c["seconds"],
                     "peak_gib": c.get("peak_gib"), "total_peak_gib": c.get("total_peak_gib"),
                     "audio_s": audio.get("seconds"),
                     "rtf": round(c["seconds"] / audio["seconds"], 3) if audio.get("seconds") else None})
    return rows


def recipe_from_runs(summaries: list[dict], gpu, headroom: float = 0.9) -> Recipe:
    """The 8 GB recipe from measured runs: among those whose allocator peak fits ``headroom`` of ``gpu``,
    the one closest to upstream (25 steps first, then the emotion model kept, then the longest segments),
    then the fastest.

    ``summaries``: rows from ``summary`` (all runs together). The recipe's ``settings`` are the runner settings that run it;
    its peak is *measured* on the GPU the runs name. The rest of the card (``1 - headroom``) is left for
    the CUDA context and the allocator's cache, which ``track_peak`` does not count.
    """
    spec = hardware.get_gpu(gpu)
    budget = spec.memory_gib * fraction(headroom, "headroom")
    if not summaries or not all("total_peak_gib" in s for s in summaries):
        raise ValueError("summaries must be rows from indextts2_8gb.summary(setting, result), all runs together")
    fits = [s for s in summaries if s["total_peak_gib"] <= budget]
    def closest_to_upstream(s):
        return (s["diffusion_steps"] != UPSTREAM_STEPS, not s["use_qwen_emo"], -s["max_text_tokens_per_segment"],
                s["infer_s"])

    pick = min(fits, key=closest_to_upstream) if fits else min(summaries, key=lambda s: s["total_peak_gib"])
    where = f"measured on {pick['device']}"
    reasons = [f"{s['run']}, segments of {s['max_text_tokens_per_segment']} tokens: allocator peak {s['total_peak_gib']:.2f} GiB, infer {s['infer_s']:.2f} s "
               f"({'fits' if s['total_peak_gib'] <= budget else 'does not fit'} {budget:.2f} GiB)"
               for s in summaries]
    fastest = min(summaries, key=lambda s: s["infer_s"])
    reasons.append(f"chosen: {pick['run']}, segments of {pick['max_text_tokens_per_segment']} tokens; "
                   f"{pick['infer_s'] - fastest['infer_s']:+.2f} s against the fastest run measured ({fastest['run']}, "
                   f"{fastest['max_text_tokens_per_segment']} tokens)" + ("" if fits else f" - nothing measured fits: {spec.name} is too small "
                                               "for these settings; the smallest peak is shown"))
    if pick["diffusion_steps"] != UPSTREAM_STEPS:
        reasons.append(f"{pick['diffusion_steps']} steps instead of upstream's {UPSTREAM_STEPS}: listen before "
                       "keeping it (steps change the sound, not only the time)")
    if not pick["use_qwen_emo"]:
        reasons.append("without QwenEmotion: emotion from text (use_emo_text) is unavailable; "
                       "emo_audio_prompt and emo_vector still work")
    settings = {k: pick[k] for k in (*BUILD_SETTINGS, "max_text_tokens_per_segment")}
    return Recipe(spec.name, round(budget, 2), "float16" if pick["use_fp16"] else "float32", "float32",
                  pick["diffusion_steps"], pick["max_text_tokens_per_segment"], bool(pick["offload_idle_stages"]), pick["total_peak_gib"],
                  round(pick["infer_s"] - fastest["infer_s"], 2), reasons, basis=where, settings=settings)


def _deploy(deploy):
    if deploy is None:
        from colab_tts.deploy import deploy
    return deploy


def run_sweep(texts: dict, segments=(120,), workdir="colab_tts_deploy", sweep=SWEEP, deploy=None):
    """Each ``Setting`` of ``sweep`` as one runner run (its own output folder; environment and weights shared).

    Returns (run name -> result, run name -> the runner's one-line error) so that one failed run (e.g. out
    of memory) leaves the others. The first run makes the environment and downloads the weights.
    """
    from colab_tts.devices import progress

    deploy, results, failed = _deploy(deploy), {}, {}
    for i, setting in enumerate(progress(sweep, desc="IndexTTS-2 runs")):
        p = sweep_plan(setting.overrides, texts, segments, workdir, out=f"{workdir}/indextts2/sweep_{i}")
        try:
            results[setting.name] = deploy(plan=p, progress=i == 0)
        except ValueError as e:  # read_result's one line: the worker's error
            failed[setting.name] = str(e)
    return results, failed


def run_recipe(recipe: Recipe, texts: dict, cap_gib: float, workdir="colab_tts_deploy", deploy=None):
    """The recipe's settings in one run with the allocator capped at ``cap_gib``: (result, None), or (None,
    the runner's one-line error, e.g. CUDA out of memory) when it does not fit."""
    if not isinstance(recipe, Recipe) or not recipe.settings:
        raise ValueError("recipe must come from indextts2_8gb.recipe_from_runs (it carries the runner settings)")
    build = {k: recipe.settings[k] for k in BUILD_SETTINGS}
    p = sweep_plan(build, texts, (recipe.settings["max_text_tokens_per_segment"],), workdir,
                   out=f"{workdir}/indextts2/recipe", memory_cap_gib=cap_gib)
    try:
        return _deploy(deploy)(plan=p, progress=False), None
    except ValueError as e:
        return None, str(e)


def players(result: dict) -> list:
    """(label, IPython Audio) for each wav a result holds."""
    from IPython.display import Audio

    out = []
    for c in result["calls"]:
        audio = c.get("audio") or {}
        if audio.get("path") and Path(audio["path"]).exists():
            out.append((c.get("label") or c["target"], Audio(audio["path"])))
    return out
