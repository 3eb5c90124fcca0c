"""Notebook 04 on a GPU: real GPT-SoVITS v2 through ``colab_tts.deploy`` - the plan it follows, and the
tables, verdict and players made from what the runner hands back.

The kernel never imports upstream code: the plan is plain JSON (``colab_tts.deploy.plan``) and the result is
``result.json`` plus wav files (``colab_tts.deploy.protocol``). Every number in a result is *measured* by the
runner on the device it names; the 25 tokens per second of audio are *cited* (``colab_tts/data/cited/gpt_sovits.json``).
"""

from __future__ import annotations

from ..cited import value
from ..deploy.protocol import call_rows, read_wav

# --- the real deployment (colab_tts.deploy): its plan, and what the runner hands back ------------------

def _names(kwargs: dict) -> str:
    """Keyword names; a nested dict as ``name{...}``, an object an earlier call built as ``name=<Object>``."""
    return ", ".join(f"{k}=<{v['$ref']}>" if isinstance(v, dict) and set(v) == {"$ref"}
                     else f"{k}{{{_names(v)}}}" if isinstance(v, dict) else k for k, v in kwargs.items())


def deploy_plan_rows(plan: dict) -> list[dict]:
    """The dry-run plan as a table: one row per upstream call with its keyword names; for each ``TTS.run``
    the inputs every run passes, and what it sets beyond the first run (the switches under study).
    Names and switches only: no paths, no timings."""
    runs = [c["kwargs"] for c in plan["calls"] if c.get("pass_as")]
    shared = [k for k in runs[0] if all(k in r for r in runs)] if runs else []
    rows = []
    for call in plan["calls"]:
        kw = call["kwargs"]
        if call.get("pass_as"):
            names = f"{call['pass_as']}{{{_names({k: kw[k] for k in shared})}}}"
            own = ", ".join(f"{k}={v}" for k, v in kw.items() if k not in runs[0] or runs[0][k] != v)
        else:
            names, own = _names(kw), ""
        rows.append({"call": call["target"], "label": call.get("label", ""), "kwargs": names,
                     "set beyond the first run": own})
    return rows


def deploy_plan_summary(plan: dict) -> list[str]:
    """Upstream at its pinned commit, the interpreter it asks for, the install steps and the weights."""
    up = plan["upstream"]
    weights = "; ".join(f"{w['hub_repo']} ({', '.join(w['patterns'])})" for w in plan["weights"])
    return [f"upstream: {up['repo']} @ {up['commit']}",
            f"Python {plan['python']}: {plan['python_source']}",
            f"environment: {len(plan['install'])} install commands, each run once (a marker per command)",
            f"weights: {weights}"]


def should_deploy(setting, device) -> tuple[bool, str]:
    """(run the real deployment?, the one line saying why not). ``setting``: "auto" (on CUDA), True or False."""
    if setting not in ("auto", True, False):
        raise ValueError(f"DEPLOY is 'auto' (run on a CUDA GPU), True or False, got {setting!r}")
    device = getattr(device, "type", str(device).split(":")[0])
    if setting is False:
        return False, "skipped the real GPT-SoVITS deployment: DEPLOY = False"
    if device != "cuda":
        return False, (f"skipped the real GPT-SoVITS deployment: it needs a CUDA GPU and this runtime has "
                       f"{device}; on Colab pick Runtime > Change runtime type > T4 GPU and run this cell again")
    return True, ""


def deploy_speed_rows(result: dict) -> list[dict]:
    """Side by side from one runner result: each upstream ``TTS.run``, each path of our decoder fed every
    segment of upstream's greedy T2S inputs, and the two CUDA-graph paths (upstream's ``CUDAGraphRunner``,
    ours); GPT-stage tokens/s and real-time factor, all measured on the result's device. A path that did
    not run (no CUDA) keeps its row, with its one-line reason in ``kind``.

    GPT-stage RTF = (25 tokens per second of audio) / tokens/s; whole-run RTF = ``TTS.run`` seconds / audio
    seconds (front end, GPT stage and SoVITS; only upstream's rows have it). "greedy tokens = upstream's"
    compares with upstream's naive greedy decode, segment by segment.
    """
    rate = value("gpt_sovits.semantic_tokens_per_second")
    kind = f"measured: this run, {result['device']}"
    rows = []
    for call, row in zip(result["calls"], call_rows(result)):
        if row.get("t2s_tokens_per_s"):
            rows.append({"path": f"upstream TTS.run: {call.get('label', '')}", "GPT tokens": call["t2s_tokens"],
                         "GPT-stage tokens/s": row["t2s_tokens_per_s"],
                         "GPT-stage RTF": rate / row["t2s_tokens_per_s"], "whole-run RTF": row.get("rtf"),
                         "greedy tokens = upstream's": None, "segments identical": None, "kind": kind})
    comparison = result.get("extra", {}).get("greedy_comparison")
    for label, c in (comparison.items() if isinstance(comparison, dict) else ()):
        if "tokens_per_s" not in c:  # skipped ("needs CUDA: ...") or failed
            rows.append({"path": label, "GPT tokens": None, "GPT-stage tokens/s": None, "GPT-stage RTF": None,
                         "whole-run RTF": None, "greedy tokens = upstream's": None, "segments identical": None,
                         "kind": c.get("skipped") or f"failed: {c.get('failed')}"})
            continue
        rows.append({"path": label, "GPT tokens": c["tokens"], "GPT-stage tokens/s": c["tokens_per_s"],
                     "GPT-stage RTF": rate / c["tokens_per_s"], "whole-run RTF": None,
                     "greedy tokens = upstream's": c["identical_to_upstream"],
                     "segments identical": c.get("segments_identical"), "kind": kind})
    return rows


def greedy_verdict(result: dict) -> str:
    """One line: are our decoder's greedy tokens identical to upstream's on the same inputs, every segment?
    Upstream's own CUDA-graph path, when it ran, is reported against upstream's naive path at the end."""
    comparison = result.get("extra", {}).get("greedy_comparison")
    if not isinstance(comparison, dict):
        return f"greedy comparison not made: {comparison or 'no result'}"
    n = result["extra"].get("upstream_greedy_tokens")
    segments = result["extra"].get("greedy_segments")
    ran = {label: c for label, c in comparison.items() if "identical_to_upstream" in c}
    ours = {label: c for label, c in ran.items() if c.get("of", "ours") == "ours"}
    theirs = "".join(f"; {label}: {c.get('segments_identical', '?')} segments identical to upstream's naive path"
                     for label, c in ran.items() if c.get("of") == "upstream")
    differ = [f"{label} ({c['segments_identical']} segments)" if "segments_identical" in c else label
              for label, c in ours.items() if not c["identical_to_upstream"]]
    if differ:
        return (f"greedy tokens DIFFER from upstream's ({n} tokens) on: {'; '.join(differ)} "
                f"({result['device']}){theirs}")
    where = f"{segments} segments, " if segments else ""
    return (f"greedy tokens identical to upstream's on every path of ours that ran: {where}{n} tokens, same "
            f"checkpoint, same front-end inputs ({result['device']}){theirs}")


class Players:
    """Labelled audio players for the wav files of a runner result (HTML in a notebook, a list elsewhere)."""

    def __init__(self, result: dict):
        from ..audio import Speech

        self.items = [(c.get("label") or c["target"], Speech(*read_wav(c["audio"]["path"])))
                      for c in result["calls"] if c.get("audio")]

    def __repr__(self) -> str:
        return "\n".join(f"{label}: {s.duration:.1f} s at {s.sample_rate} Hz" for label, s in self.items)

    def _repr_html_(self) -> str:
        import html

        return "".join(f"<p>{html.escape(label)} ({s.duration:.1f} s)</p>{s._repr_html_()}" for label, s in self.items)
