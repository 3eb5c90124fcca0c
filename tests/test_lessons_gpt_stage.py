"""Notebook 04's GPU section: the plan table, the side-by-side speed rows, the greedy verdict, the players.

The results here are written the way the worker writes them (``protocol.write_wav`` / ``write_result``) and read
back with ``read_result``; ``tests/test_deploy.py`` runs the same helpers on a real runner result (stand-in
upstream).
"""

import numpy as np
import pytest

from colab_tts.deploy import plan, read_result
from colab_tts.deploy.protocol import write_result, write_wav
from colab_tts.lessons import gpt_stage_deploy as d


def test_plan_rows_name_every_kwarg_and_each_runs_switches_without_values_or_paths():
    p = plan("gpt-sovits", workdir="/some/where")
    rows = d.deploy_plan_rows(p)
    assert [r["call"] for r in rows] == [c["target"] for c in p["calls"]]
    assert rows[0]["kwargs"].startswith("configs{custom{device, is_half, version, t2s_weights_path")
    assert rows[1]["kwargs"] == "configs=<TTS_Config>"
    runs = rows[2:]
    assert all(r["kwargs"].startswith("inputs{text, text_lang, ref_audio_path") for r in runs)
    assert [r["set beyond the first run"] for r in runs] == [
        "", "parallel_infer=False", "batch_size=8, split_bucket=True", "top_k=1, parallel_infer=False"]
    assert not any("/" in r["kwargs"] + r["set beyond the first run"] for r in rows), "no paths in the table"
    p2 = plan("gpt-sovits", {"variants": [{"label": "a"}, {"label": "b", "batch_size": 4}]})
    assert [r["set beyond the first run"] for r in d.deploy_plan_rows(p2)[2:]] == ["", "batch_size=4"]


def test_plan_summary_names_the_pinned_commit_python_and_weights():
    p = plan("gpt-sovits")
    lines = d.deploy_plan_summary(p)
    assert p["upstream"]["commit"] in lines[0] and "Python 3.10" in lines[1]
    assert f"{len(p['install'])} install commands" in lines[2] and "lj1995/GPT-SoVITS" in lines[3]


def test_should_deploy_runs_only_on_cuda_unless_switched_off():
    assert d.should_deploy("auto", "cuda") == (True, "")
    assert d.should_deploy(True, "cuda:0")[0] is True
    run, why = d.should_deploy("auto", "cpu")
    assert not run and "CUDA" in why and "\n" not in why
    assert d.should_deploy(False, "cuda") == (False, "skipped the real GPT-SoVITS deployment: DEPLOY = False")
    with pytest.raises(ValueError, match="'auto'"):
        d.should_deploy("yes", "cuda")


def _result(tmp_path, identical=(True, True), device="Tesla T4", more=None):
    sr = 32000
    calls = [{"target": "TTS_Config", "seconds": 0.01}, {"target": "TTS", "seconds": 5.0}]
    for i, (label, tps, seconds, audio_s) in enumerate([("upstream defaults", 50.0, 4.0, 2.0),
                                                         ("greedy <naive>", 40.0, 3.0, 1.5)]):
        audio = write_wav(tmp_path / f"gpt_sovits_{i}.wav", np.zeros(int(audio_s * sr)), sr)
        calls.append({"target": "TTS.run", "label": label, "seconds": seconds, "t2s_tokens": 50,
                      "t2s_tokens_per_s": tps, "audio": audio})
    comparison = {f"ours {i}": {"seconds": 0.5, "tokens": 37, "tokens_per_s": 100.0 * (i + 1),
                                "identical_to_upstream": same, "segments_identical": "3/3" if same else "2/3",
                                "of": "ours"} for i, same in enumerate(identical)}
    comparison.update(more or {})
    write_result(tmp_path, {"system": "gpt-sovits", "upstream": {}, "device": device, "ok": True, "calls": calls,
                            "extra": {"greedy_comparison": comparison, "upstream_greedy_tokens": 37,
                                      "greedy_segments": 3}})
    return read_result(tmp_path)


NO_CUDA = {"upstream CUDA graph": {"skipped": "needs CUDA: upstream's runner captures a graph; this run has cpu"},
           "ours, CUDA graph": {"skipped": "needs CUDA: reduce-overhead; this run has cpu"}}


def test_speed_rows_put_upstream_runs_and_our_paths_side_by_side(tmp_path):
    rows = d.deploy_speed_rows(_result(tmp_path))
    assert [r["path"] for r in rows] == ["upstream TTS.run: upstream defaults", "upstream TTS.run: greedy <naive>",
                                         "ours 0", "ours 1"]
    assert [r["GPT-stage RTF"] for r in rows] == pytest.approx([25 / 50, 25 / 40, 25 / 100, 25 / 200])
    assert [r["whole-run RTF"] for r in rows] == pytest.approx([2.0, 2.0, None, None])
    assert [r["greedy tokens = upstream's"] for r in rows] == [None, None, True, True]
    assert [r["segments identical"] for r in rows] == [None, None, "3/3", "3/3"]
    assert {r["kind"] for r in rows} == {"measured: this run, Tesla T4"}


def test_speed_rows_keep_the_cuda_graph_paths_that_did_not_run_as_one_line_each(tmp_path):
    rows = d.deploy_speed_rows(_result(tmp_path, device="cpu", more=NO_CUDA))
    assert len({tuple(r) for r in rows}) == 1, "every row has the same columns"
    assert [r["path"] for r in rows[-2:]] == list(NO_CUDA)
    assert [r["kind"] for r in rows[-2:]] == [c["skipped"] for c in NO_CUDA.values()]
    assert all(v is None for r in rows[-2:] for k, v in r.items() if k not in ("path", "kind"))
    failed = d.deploy_speed_rows(_result(tmp_path, more={"ours, CUDA graph": {"failed": "RuntimeError: boom"}}))
    assert failed[-1]["kind"] == "failed: RuntimeError: boom" and failed[-1]["GPT-stage tokens/s"] is None


def test_greedy_verdict_says_identical_differ_or_skipped(tmp_path):
    assert d.greedy_verdict(_result(tmp_path)) == (
        "greedy tokens identical to upstream's on every path of ours that ran: 3 segments, 37 tokens, same "
        "checkpoint, same front-end inputs (Tesla T4)")
    differ = d.greedy_verdict(_result(tmp_path, identical=(True, False)))
    assert "DIFFER" in differ and "ours 1 (2/3 segments)" in differ and "ours 0" not in differ
    skipped = {"device": "cpu", "extra": {"greedy_comparison": "skipped: no greedy (top_k=1) TTS.run call"}}
    assert d.greedy_verdict(skipped) == "greedy comparison not made: skipped: no greedy (top_k=1) TTS.run call"
    assert d.greedy_verdict(_result(tmp_path, more=NO_CUDA)).startswith("greedy tokens identical")


def test_greedy_verdict_reports_upstreams_cuda_graph_path_against_its_naive_one_not_as_ours(tmp_path):
    theirs = {"upstream CUDA graph": {"seconds": 0.2, "tokens": 37, "tokens_per_s": 185.0, "of": "upstream",
                                      "identical_to_upstream": False, "segments_identical": "0/3"}}
    verdict = d.greedy_verdict(_result(tmp_path, more=theirs))
    assert verdict.startswith("greedy tokens identical to upstream's on every path of ours")
    assert verdict.endswith("; upstream CUDA graph: 0/3 segments identical to upstream's naive path")


def test_players_label_each_wav_the_runner_wrote(tmp_path):
    players = d.Players(_result(tmp_path))
    assert [(label, round(s.duration, 2), s.sample_rate) for label, s in players.items] == [
        ("upstream defaults", 2.0, 32000), ("greedy <naive>", 1.5, 32000)]
    page = players._repr_html_()
    assert page.count("<audio") == 2 and "greedy &lt;naive&gt; (1.5 s)" in page
    assert repr(players).splitlines() == ["upstream defaults: 2.0 s at 32000 Hz", "greedy <naive>: 1.5 s at 32000 Hz"]
