"""Notebook 03's GPU section: runner plans for the IndexTTS-2 sweep, the measured rows, the measured recipe.

The results here are shaped like the worker's result.json on CUDA (calls with ``peak_gib`` /
``total_peak_gib``, stage rows, the weights-by-stage row); their numbers are made up for the test.
"""

import json
from pathlib import Path

import pytest

from colab_tts.hardware import GpuSpec
from colab_tts.lessons import indextts2_8gb as R

ROOT = Path(__file__).resolve().parents[1]
SIGNATURES = json.loads((ROOT / "colab_tts/data/deploy/upstream_signatures.json").read_text())["indextts2"]
TEXTS = {"long": "A long English text. It has two sentences."}


def test_sweep_plan_runs_each_text_and_segment_on_one_build_with_kwargs_upstream_takes(tmp_path):
    p = R.sweep_plan(R.SWEEP[2].overrides, {**TEXTS, "short": "Hi."}, (120, 40), tmp_path, out=tmp_path / "o")
    build, *infers = p["calls"]
    assert build["target"] == "IndexTTS2" and build["kwargs"]["use_fp16"] is True
    assert build["kwargs"]["use_qwen_emo"] is False
    assert [c["label"] for c in infers] == ["long, 120 tokens", "long, 40 tokens", "short, 120 tokens", "short, 40 tokens"]
    assert [c["kwargs"]["max_text_tokens_per_segment"] for c in infers] == [120, 40, 120, 40]
    assert infers[2]["kwargs"]["text"] == "Hi."
    assert len({c["kwargs"]["output_path"] for c in infers}) == 4  # one wav per call, none overwritten
    for c in infers:
        assert c["target"] == "IndexTTS2.infer" and set(c["kwargs"]) <= set(SIGNATURES["IndexTTS2.infer"]["params"])
    assert p["settings"]["offload_idle_stages"] is True and p["settings"]["memory_cap_gib"] is None
    capped = R.sweep_plan(R.SWEEP[0].overrides, TEXTS, (120,), tmp_path, memory_cap_gib=7.2)
    assert capped["settings"]["memory_cap_gib"] == 7.2 and capped["settings"]["use_fp16"] is False


def test_the_sweep_changes_one_build_setting_per_run():
    for before, after in zip(R.SWEEP, R.SWEEP[1:]):
        changed = {k for k in R.BUILD_SETTINGS if before.overrides[k] != after.overrides[k]}
        assert changed and changed <= {"use_fp16", "use_qwen_emo", "offload_idle_stages", "diffusion_steps"}
    assert R.SWEEP[0].overrides["diffusion_steps"] == R.UPSTREAM_STEPS


@pytest.mark.parametrize("texts, segments, match", [({}, (120,), "texts"), ({"a": ""}, (120,), "texts"),
                                                    (TEXTS, (0,), "segments"), (TEXTS, (), "segments")])
def test_sweep_plan_bad_input(texts, segments, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        R.sweep_plan(None, texts, segments, tmp_path)


def fake_result(peaks: dict, build_peak=3.0, held=2.5, device="Tesla T4", seconds=10.0):
    """peaks: segment -> allocator peak of the infer call at that segment length."""
    calls = [{"target": "IndexTTS2", "seconds": 30.0, "peak_gib": build_peak, "total_peak_gib": build_peak,
              "held_gib": held}]
    for n, peak in peaks.items():
        calls.append({"target": "IndexTTS2.infer", "label": f"long, {n} tokens", "seconds": seconds - (120 - n) / 120,
                      "peak_gib": peak - held, "total_peak_gib": peak, "audio": {"seconds": 8.0}})
    stages = [{"stage": "weights by stage (GiB)", "sizes": {"gpt": 1.6, "bigvgan": 0.4}},
              {"stage": "gpt", "method": "inference_speech", "seconds": 4.0, "peak_gib": 1.3},
              {"stage": "gpt", "method": "forward", "seconds": 0.5, "peak_gib": 0.9},
              {"stage": "bigvgan", "method": "forward", "seconds": 0.2, "peak_gib": 0.7}]
    return {"system": "indextts2", "device": device, "ok": True, "calls": calls, "stages": stages}


def sweep_rows(fp16_peak=7.6):
    runs = [fake_result({120: 9.0, 40: 8.8}, seconds=12.0), fake_result({120: fp16_peak, 40: 7.5}, seconds=9.0),
            fake_result({120: 4.1, 40: 3.9}, seconds=8.0), fake_result({120: 4.0, 40: 3.8}, seconds=6.0)]
    return [row for setting, result in zip(R.SWEEP, runs) for row in R.summary(setting, result)]


def test_summary_has_one_row_per_segment_with_the_runs_settings_and_its_peak():
    rows = R.summary(R.SWEEP[1], fake_result({120: 7.6, 40: 7.5}, build_peak=8.0))
    assert [r["max_text_tokens_per_segment"] for r in rows] == [120, 40]
    assert rows[0]["use_fp16"] is True and rows[0]["use_qwen_emo"] is True
    assert [r["total_peak_gib"] for r in rows] == [8.0, 8.0]  # the build's peak counts: it happens on the card too
    assert rows[0]["weights_gib"] == 2.5 and rows[0]["infer_s"] == 10.0


def test_summaries_follow_the_sweeps_order_and_skip_missing_runs():
    rows = R.summaries({R.SWEEP[3].name: fake_result({120: 4.0}), R.SWEEP[1].name: fake_result({120: 7.0})})
    assert [r["run"] for r in rows] == [R.SWEEP[1].name, R.SWEEP[3].name]
    assert [r["diffusion_steps"] for r in rows] == [25, 10]


def test_summary_refuses_a_run_without_cuda_peaks():
    cpu = fake_result({120: 1.0}, device="cpu")
    for c in cpu["calls"]:
        del c["total_peak_gib"]
    with pytest.raises(ValueError, match="needs a GPU"):
        R.summary(R.SWEEP[0], cpu)
    with pytest.raises(TypeError, match="Setting"):
        R.summary("fp32", fake_result({120: 1.0}))


def test_recipe_keeps_upstreams_steps_then_the_emotion_model_then_long_segments():
    recipe = R.recipe_from_runs(sweep_rows(), "RTX-4060")  # 90% of its 7.75 GiB: fp32 and fp16 with emotion do not fit
    assert recipe.settings == {**R.SWEEP[2].overrides, "max_text_tokens_per_segment": 120}
    assert recipe.offload and recipe.gpt_dtype == "float16" and recipe.steps == 25 and recipe.peak_gib == 4.1
    assert recipe.basis == "measured on Tesla T4" and "measured on Tesla T4" in str(recipe)
    assert recipe.extra_s_per_utterance == pytest.approx(8.0 - (6.0 - 80 / 120), abs=0.01)  # against the fastest run
    assert any("QwenEmotion" in r for r in recipe.reasons)
    roomy = R.recipe_from_runs(sweep_rows(fp16_peak=6.5), "RTX-4060")
    assert roomy.settings["use_qwen_emo"] is True and not roomy.offload and roomy.gpt_dtype == "float16"


def test_recipe_on_a_card_nothing_fits_shows_the_smallest_and_says_so():
    recipe = R.recipe_from_runs(sweep_rows(), GpuSpec("a 4 GB card", (7, 5), 4.0, 200, 20))
    assert recipe.peak_gib == 3.8 and recipe.steps == 10
    assert any("too small" in r for r in recipe.reasons)
    with pytest.raises(ValueError, match="summary"):
        R.recipe_from_runs([], "T4")


def test_stage_table_takes_each_stages_largest_peak_per_run_and_the_weights():
    rows = R.stage_table({"a": fake_result({120: 4.0}), "b": fake_result({120: 5.5}, build_peak=6.0)})
    gpt = next(r for r in rows if r["stage"] == "gpt")
    assert gpt == {"stage": "gpt", "weights_gib": 1.6, "a": 1.3, "b": 1.3}
    assert rows[-1]["a"] == 4.0 and rows[-1]["b"] == 6.0


def test_run_sweep_and_recipe_hand_the_runner_one_plan_per_run_and_the_cap(tmp_path):
    seen = []

    def deploy(plan, progress):
        seen.append(plan)
        if plan["settings"]["memory_cap_gib"] == 1.0 or not plan["settings"]["use_fp16"]:
            raise ValueError("the indextts2 runner failed: OutOfMemoryError: CUDA out of memory")
        return {"out": plan["out"]}

    results, failed = R.run_sweep(TEXTS, (120, 40), tmp_path, deploy=deploy)
    assert list(results) == [s.name for s in R.SWEEP[1:]]  # the failed fp32 run does not stop the others
    assert list(failed) == [R.SWEEP[0].name] and "out of memory" in failed[R.SWEEP[0].name]
    assert [p["settings"]["diffusion_steps"] for p in seen] == [s.overrides["diffusion_steps"] for s in R.SWEEP]
    assert len({p["out"] for p in seen}) == len(R.SWEEP)
    recipe = R.recipe_from_runs(sweep_rows(), "RTX-4060")
    result, error = R.run_recipe(recipe, TEXTS, 7.2, tmp_path, deploy=deploy)
    assert error is None and seen[-1]["settings"]["memory_cap_gib"] == 7.2
    assert seen[-1]["settings"]["offload_idle_stages"] is True
    assert [c["kwargs"]["max_text_tokens_per_segment"] for c in seen[-1]["calls"][1:]] == [120]
    result, error = R.run_recipe(recipe, TEXTS, 1.0, tmp_path, deploy=deploy)
    assert result is None and "out of memory" in error


def test_plan_table_lists_targets_and_kwarg_names():
    rows = R.plan_table(R.sweep_plan(None, TEXTS, (120,), "w"))
    assert rows[0]["call"] == "IndexTTS2" and "use_fp16" in rows[0]["kwargs"]
    assert rows[1]["call"] == "IndexTTS2.infer [long, 120 tokens]"
    assert "max_text_tokens_per_segment" in rows[1]["kwargs"]


def test_the_worker_records_the_absolute_peak_that_summary_reads(monkeypatch):
    """The worker's CUDA path against a fake allocator: 2 GiB held, a stage allocating 1 GiB inside a call."""
    import torch

    from colab_tts.deploy import worker

    gib = worker.GIB
    mem = {"now": 2 * gib, "peak": 2 * gib}

    def alloc(n):
        mem["now"] += n
        mem["peak"] = max(mem["peak"], mem["now"])

    def reset(*a):
        mem["peak"] = mem["now"]

    for name, fn in {"is_available": lambda: True, "synchronize": lambda *a: None, "reset_peak_memory_stats": reset,
                     "memory_allocated": lambda *a: mem["now"], "max_memory_allocated": lambda *a: mem["peak"]}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    with worker.Measure() as record:
        alloc(gib)  # a transient 1 GiB before the stage, whose entry resets the peak statistics
        alloc(-gib)
        with worker.stage_peak() as stage:
            alloc(gib // 4)
    assert stage["peak_gib"] == 0.25 and stage["total_peak_gib"] == 2.25
    assert record["peak_gib"] == 1.0 and record["total_peak_gib"] == 3.0  # the peak before the reset counts
    assert record["held_gib"] == 2.25
