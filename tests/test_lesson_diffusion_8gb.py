"""Notebook 03's lesson: sweeps, verdicts with their provenance, the IndexTTS-2 plan, the device choice."""

from types import SimpleNamespace

import pytest
import torch
from tiny_flow import TINY_DIT as TINY

from colab_tts import flow, hardware
from colab_tts.hardware import GpuSpec
from colab_tts.lessons import diffusion_8gb as L
from colab_tts.lessons import diffusion_8gb_sweeps as sweeps
from colab_tts.memory import module_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_error_shrinks_with_steps_and_reference_is_cached(models):
    dit, _ = models
    inputs = flow.make_inputs(TINY, 8, 4)
    cache = {}
    ref = L.reference_mel(dit, inputs, 200, cache)
    assert L.reference_mel(dit, inputs, 200, cache) is ref and len(cache) == 1
    errors = [L.relative_error(flow.sample(dit, inputs, n), ref) for n in (2, 8, 32)]
    assert errors[0] > errors[1] > errors[2]
    assert L.relative_error(flow.sample(dit, inputs, 200), ref) < 1e-5


def test_peak_flat_in_steps_unless_trajectory_kept(models):
    dit, _ = models
    rows = L.trajectory_peaks(dit, steps=(2, 12), target_frames=16, prompt_frames=4, device="cpu")
    assert rows[1]["peak_mib"] == pytest.approx(rows[0]["peak_mib"], rel=0.05)
    grown = (rows[1]["peak_mib_trajectory"] - rows[0]["peak_mib_trajectory"]) * 1024**2
    assert grown == pytest.approx(10 * 80 * 20 * 4, rel=0.05)  # one fp32 mel (80 x 20 frames) kept per extra step
    verdict = L.claim_trajectory(rows)
    assert verdict.holds and "on this CPU" in verdict.basis and verdict.on_gpu.startswith("transfers")


def test_checkpointing_saves_only_with_grad(models):
    dit, _ = models
    rows = L.checkpointing_peaks(dit, target_frames=32, prompt_frames=8, device="cpu")
    peak = {(r["grad"], r["checkpointing"]): r["peak_mib"] for r in rows}
    assert peak[(False, True)] == pytest.approx(peak[(False, False)], rel=0.05)
    assert peak[(True, True)] < 0.7 * peak[(True, False)]
    no_grad, grad = L.claim_checkpointing(rows)
    assert not no_grad.holds and grad.holds and str(no_grad).startswith("REFUTED")
    assert not dit.gradient_checkpointing


@pytest.fixture(scope="module")
def measured(models):
    dit, voc = models
    return L.sweep(dit, voc, steps=(2, 8), precisions=("fp32", "bf16"), offload=(False, True),
                      target_frames=(8,), prompt_frames=4, progress=False, device="cpu")


def test_sweep_rows(measured, models):
    rows = measured.rows
    assert len(rows) == 8
    assert set(rows[0]) == {"steps", "precision", "offload", "frames", "audio_s", "latency_s", "peak_mib", "error"}
    fp32 = {(r["steps"], r["offload"]): r for r in rows if r["precision"] == "float32"}
    assert fp32[(8, False)]["error"] < fp32[(2, False)]["error"]
    assert fp32[(2, False)]["peak_mib"] == pytest.approx(fp32[(8, False)]["peak_mib"], rel=0.05)
    assert fp32[(2, True)]["peak_mib"] < fp32[(2, False)]["peak_mib"]
    dit, voc = models
    weights_mib = (module_bytes(dit) + module_bytes(voc)) / 2**20
    assert fp32[(2, False)]["peak_mib"] > weights_mib  # the resident weights are part of the peak
    steps_mem, steps_time = L.claim_steps(measured)
    assert not steps_mem.holds and steps_time.holds
    assert L.claim_offload(measured, 8).holds


def test_recommend_8gb(measured, models):
    dit, voc = models
    act = L.stage_activations(dit, voc, target_frames=8, prompt_frames=4, steps=2, device="cpu")
    assert act["dit"] > 0 and act["vocoder"] > 0
    t4 = L.recommend_8gb("T4", measured, act)
    assert t4.gpt_dtype == "float16" and t4.s2mel_dtype == "float32" and t4.steps == 25
    pascal = L.recommend_8gb(GpuSpec("a Pascal card", (6, 1), 7.9, 320, 10), measured, act)
    assert pascal.gpt_dtype == "float32" and pascal.offload  # no fp16: the fp32 total does not fit 90% of 7.9
    small = GpuSpec("6 GB card", (8, 6), 5.8, 360, 25)
    recipe = L.recommend_8gb(small, measured)  # weights and IndexTTS-2's totals only
    assert recipe.offload and recipe.extra_s_per_utterance > 0 and recipe.peak_gib < 5.8
    assert any("PCIe" in r for r in recipe.reasons)
    # CPU activations scaled by width are reported, never added: no run at the real width checked them
    with_act = L.recommend_8gb(small, measured, {"dit": 1.0, "vocoder": 0.0})  # 1 MiB/s at the measured width
    assert with_act.peak_gib == recipe.peak_gib and with_act.offload == recipe.offload
    line = next(r for r in with_act.reasons if r.startswith("not counted"))
    assert f"~{30 * 512 / 32 / 1024:.2f} GiB" in line and "never checked" in line  # 30 s of a 120-token chunk
    assert L.recommend_8gb("RTX-4060").peak_gib == L.recommend_8gb("RTX-4060", measured, act).peak_gib
    with pytest.raises(ValueError, match="claims_sweep"):
        L.recommend_8gb("T4", None, act)
    roomy = L.recommend_8gb("A100-80GB", measured, act)
    assert not roomy.offload and roomy.extra_s_per_utterance == 0
    with pytest.raises(ValueError, match="headroom"):
        L.recommend_8gb("T4", measured, act, headroom=1.5)


def test_chunk_sweep_peak_follows_longest_chunk(models):
    dit, voc = models
    text = "今天天气很好。我们去公园散步吧。你想一起来吗？当然可以！" * 2
    rows = L.chunk_sweep(dit, voc, {"zh": text}, max_tokens=(10, None), steps=1, tokens_per_s=40,
                            prompt_frames=2, device="cpu", progress=False)
    split, whole = rows
    assert split["chunks"] > 1 and whole["chunks"] == 1
    assert split["longest_s"] < whole["longest_s"] and split["total_s"] == pytest.approx(whole["total_s"], rel=0.1)
    assert split["peak_mib"] < whole["peak_mib"]
    assert L.claim_chunks(rows)[0].holds


def test_claims_sweep_compares_neighbours(models):
    dit, voc = models
    result = L.claims_sweep(dit, voc, steps=(2, 4), at_steps=4, precisions=("bfloat16",), target_frames=(8,),
                             prompt_frames=4, progress=False, device="cpu")
    parts = [(r["part"], r["steps"], r["precision"], r["offload"]) for r in result.rows]
    assert parts == [("steps", 2, "float32", False), ("steps", 4, "float32", False),
                     ("variants", 4, "float32", False), ("variants", 4, "float32", True),
                     ("variants", 4, "bfloat16", False), ("variants", 4, "bfloat16", True)]
    fp32_4 = [r for r in result.rows if r["steps"] == 4 and r["precision"] == "float32" and not r["offload"]]
    assert fp32_4[0]["error"] == fp32_4[1]["error"]  # deterministic: the same solution measured twice
    line = L.claim_offload(result, 4).evidence
    assert f"{fp32_4[1]['latency_s']:.2f} s" in line  # the neighbour, not the step-scan row


def test_sweep_turns_oom_into_advice(monkeypatch):
    from colab_tts.errors import OutOfMemoryAdvice

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(sweeps, "measure_pipeline", oom)
    monkeypatch.setattr(sweeps, "reference_mel", lambda *a, **k: None)
    monkeypatch.setattr(sweeps, "synthesize", lambda *a, **k: None)
    dit, voc = flow.DiT(flow.SMALL_DIT).eval(), flow.Vocoder(flow.SMALL_VOCODER).eval()
    with pytest.raises(OutOfMemoryAdvice, match="25 steps") as err:
        L.sweep(dit, voc, steps=(25,), target_frames=(4,), prompt_frames=2, device="cpu", progress=False)
    assert "offload" in str(err.value)


def _fake_gpu(monkeypatch, name, cc, total_gib):
    """Make torch report one CUDA GPU; is_bf16_supported() must never be asked (it says True on a T4)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: SimpleNamespace(name=name, major=cc[0],
                                                                                         minor=cc[1]))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (int(total_gib * 2**30 * 0.9), int(total_gib * 2**30)))

    def asked(*a, **k):
        raise AssertionError("decide bfloat16 by compute capability, not torch.cuda.is_bf16_supported()")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", asked)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)


def test_setup_on_a_t4_measures_no_bfloat16_row(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla T4", (7, 5), 14.74)
    s = L.setup(simulate_gpu="RTX-4060")
    assert s.device.type == "cuda" and s.precisions == ("float16",) and not s.simulated
    assert s.real_size and s.dit_config == flow.INDEXTTS2_DIT
    assert s.gpu_label == "Tesla T4" and "Tesla T4 (CUDA)" in s.where  # the detected GPU, not the simulated one
    assert any("no bfloat16 row" in n and "compute capability" in n for n in s.notes)


def test_setup_on_ampere_measures_both(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0), 39.5)
    s = L.setup()
    assert s.precisions == ("float16", "bfloat16") and s.gpu.name == "NVIDIA A100-SXM4-40GB"


def test_setup_without_a_gpu_simulates_only_the_plan(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    s = L.setup(simulate_gpu="T4")
    assert s.device.type == "cpu" and not s.real_size and s.simulated
    assert s.gpu_label == "Tesla T4 (simulated: no GPU here)" and "on this CPU" in s.where
    assert s.precisions == ("float16", "bfloat16")  # both run here; their speed is labelled a CPU effect


def _variants(where, fp16_s, fp32_s=1.0):
    rows = [{"part": "variants", "steps": 25, "precision": p, "offload": False, "latency_s": t, "peak_mib": m,
             "error": e} for p, t, m, e in (("float32", fp32_s, 100.0, 0.001), ("float16", fp16_s, 52.0, 0.002))]
    return L.Measurements(rows, where, flow.SMALL_DIT, flow.SMALL_VOCODER)


def test_precision_verdicts_say_where_and_whether_it_transfers():
    cpu = _variants(sweeps.where_measured("cpu", flow.SMALL_DIT), fp16_s=6.0)
    speed = L.claim_precision_speed(cpu, "float16", 25)
    assert not speed.holds and "on this CPU" in speed.basis
    assert speed.on_gpu.startswith("does not transfer") and "tensor cores" in speed.on_gpu
    assert "no bfloat16" in speed.on_gpu and "0.3748 -> 0.3257" in speed.on_gpu  # the cited GPU measurement
    memory = L.claim_precision(cpu, "float16", 25)
    assert memory.holds and memory.on_gpu.startswith("transfers") and "random weights" in memory.evidence
    gpu = _variants("measured in this run on Tesla T4 (CUDA); real size (DiT hidden 512); random weights", 0.4)
    assert L.claim_precision_speed(gpu, "float16", 25).holds
    assert L.claim_precision_speed(gpu, "float16", 25).on_gpu == "measured on the GPU itself"


def test_t4_roofline_is_compute_bound_on_a_long_chunk_and_memory_bound_on_one_frame():
    long, short = L.t4_step_roofline(2600), L.t4_step_roofline(1)
    tensor_over_fp32 = hardware.get_gpu("T4").fp16_tflops / 8.1
    assert long["float32_ms"] / long["float16_ms"] == pytest.approx(tensor_over_fp32, rel=1e-6)
    assert short["float32_ms"] / short["float16_ms"] == pytest.approx(2.0, rel=1e-6)  # bytes halve


def test_indextts2_fp16_saves_a_fifth_not_half():
    v = L.claim_fp16_halves_indextts2()
    assert not v.holds and "-20%" in v.evidence and "7.59 -> 6.09 GiB" in v.evidence
    assert "pull/755" in v.basis and "@ee40fa7" in v.basis
    assert L.indextts2_total_gb("float32", emotion=False) == pytest.approx(8.15 - (6.54 - 5.48))


def test_sambert_premise_is_refuted_from_its_sources():
    v = L.sambert_premise()
    assert not v.holds and "no diffusion" in v.evidence and "modelscope" in v.basis


def test_the_error_column_is_explained_as_deviation_not_quality(measured):
    text = L.what_the_error_shows(measured)
    assert "does not show quality" in text and "on this CPU" in text


def test_the_8gb_recipe_counts_the_gpts_kv_cache_for_one_segment_and_says_what_to_watch(measured):
    from colab_tts.kv_cache import kv_bytes_per_token
    from colab_tts.models import ModelSpec

    recipe = L.recommend_8gb("RTX-4060", measured)  # 120-token segments at 4 tokens/s: 30 s, 50 tokens/s
    kv = kv_bytes_per_token(ModelSpec.known("indextts2-gpt"), "float16") * (120 + 1500) / 2**30
    line = next(r for r in recipe.reasons if r.startswith("counted: the GPT's KV cache for one 120-token segment"))
    assert f"{kv:.3f} GiB in float16" in line
    assert recipe.reasons[0].startswith("a prediction: this project has not run IndexTTS-2 on NVIDIA GeForce RTX 4060")
    assert "max_memory_reserved" in recipe.reasons[0] and L.RUNNER_LOG in recipe.reasons[0]
    # the peak counts that KV cache: a longer segment's cache raises it by the difference
    longer = L.recommend_8gb("RTX-4060", max_text_tokens=240)
    kv240 = kv_bytes_per_token(ModelSpec.known("indextts2-gpt"), "float16") * (240 + 3000) / 2**30
    assert longer.peak_gib - recipe.peak_gib == pytest.approx(kv240 - kv, abs=0.011)
    assert not any("error unchecked" in r for r in L.recommend_8gb("RTX-4060", measured, {"dit": 1.0, "vocoder": 1.0}).reasons)


def test_the_recipe_runs_as_the_runner_command_it_prints():
    import shlex

    from colab_tts.deploy import plan
    from colab_tts.deploy.__main__ import parse_set

    for gpu in ("RTX-4060", GpuSpec("6 GB card", (8, 6), 5.8, 360, 25)):
        recipe = L.recommend_8gb(gpu)
        words = shlex.split(recipe.command)
        assert words[:4] == ["python", "-m", "colab_tts.deploy", "indextts2"]
        overrides = parse_set(words[i + 1] for i, w in enumerate(words) if w == "--set")
        assert overrides == {**recipe.settings, "memory_cap_gib": recipe.budget_gib}
        assert overrides["offload_idle_stages"] == recipe.offload and overrides["use_fp16"] == (recipe.gpt_dtype == "float16")
        build = plan("indextts2", overrides)["calls"][0]["kwargs"]  # the runner takes every setting
        assert build["use_fp16"] == overrides["use_fp16"]
        assert recipe.command in str(recipe)


def test_the_notebooks_answer_is_the_8gb_plan_and_the_detected_card():
    t4 = L.settings_8gb("T4", "RTX-4060", simulated=True)
    assert t4.startswith("NVIDIA GeForce RTX 4060:") and "on the simulated GPU" in t4
    assert t4.splitlines()[-1].startswith("Tesla T4:")
    own = L.settings_8gb("RTX-4060", "RTX-3070")  # an 8 GB card is planned for itself, once
    assert own.startswith("NVIDIA GeForce RTX 4060:") and "RTX 3070" not in own
    # an 8 GB RTX 3060 (torch names it as the 12 GB one; detect() plans the memory it reports) is one too
    from dataclasses import replace
    small_3060 = replace(hardware.GPUS["RTX-3060-12GB"], memory_gib=7.75)
    assert L.settings_8gb(small_3060, "RTX-4060").startswith("NVIDIA GeForce RTX 3060:")


@pytest.mark.parametrize("card", ["T4", "RTX-3060-12GB", "RTX-4070", "A100-40GB",
                                  GpuSpec("a 6 GB card", (8, 6), 5.8, 360, 25)])
def test_the_8gb_card_to_plan_for_must_be_an_8gb_card(card):
    # GPU_8GB="T4" planned a 16 GB card as "the 8 GB settings" without a word
    with pytest.raises(ValueError, match=r"not an 8 GB one: name one of RTX-3070, RTX-4060$"):
        L.settings_8gb("T4", card)
