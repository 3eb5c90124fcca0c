import pytest
import torch

from colab_tts import flow
from colab_tts.hardware import GpuSpec
from colab_tts.memory import is_on_accelerator, module_bytes, to_host, track_peak

TINY = flow.DiTConfig(hidden=32, heads=2, depth=3, content_dim=16, style_dim=8, wavenet_layers=1)
TINY_VOC = flow.VocoderConfig(channels=32, upsample_rates=(4, 4), upsample_kernels=(8, 8), resblock_kernels=(3,))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two OpenMP threads on a busy 2-core machine wait on each other; one is steadier and faster here.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return flow.DiT(TINY).eval(), flow.Vocoder(TINY_VOC).eval()


def test_real_sizes():
    assert flow.INDEXTTS2_DIT.hidden == 512 and flow.INDEXTTS2_DIT.heads == 8 and flow.INDEXTTS2_DIT.depth == 13
    assert 80e6 < flow.param_count(flow.INDEXTTS2_DIT) < 110e6
    assert flow.param_count(flow.BIGVGAN_V2_22K) == pytest.approx(112e6, rel=0.02)  # BigVGAN v2's 112M
    assert flow.param_count(TINY) == flow.param_count(flow.DiT(TINY))


def test_shapes_and_prompt_region(models):
    dit, voc = models
    inputs = flow.make_inputs(TINY, target_frames=12, prompt_frames=5)
    v = dit(inputs.noise, torch.zeros_like(inputs.noise), torch.zeros(1), inputs.style, inputs.cond)
    assert v.shape == (1, 80, 17)
    mel = flow.sample(dit, inputs, steps=3)
    assert mel.shape == (1, 80, 12)
    assert voc(mel).shape == (1, 12 * 16)


def test_one_euler_step_with_cfg_by_hand(models):
    dit, _ = models
    inputs = flow.make_inputs(TINY, target_frames=6, prompt_frames=3)
    x0 = inputs.noise.clone()
    x0[..., :3] = 0
    prompt = torch.zeros_like(x0)
    prompt[..., :3] = inputs.prompt
    t = torch.zeros(1)
    with torch.no_grad():
        v_c = dit(x0, prompt, t, inputs.style, inputs.cond)
        v_u = dit(x0, torch.zeros_like(prompt), t, torch.zeros_like(inputs.style), torch.zeros_like(inputs.cond))
    expected = (x0 + 1.7 * v_c - 0.7 * v_u)[..., 3:]
    torch.testing.assert_close(flow.sample(dit, inputs, steps=1, cfg_rate=0.7), expected, atol=1e-4, rtol=1e-4)


def test_error_shrinks_with_steps_and_reference_is_cached(models):
    dit, _ = models
    inputs = flow.make_inputs(TINY, 8, 4)
    cache = {}
    ref = flow.reference_mel(dit, inputs, 200, cache)
    assert flow.reference_mel(dit, inputs, 200, cache) is ref and len(cache) == 1
    errors = [flow.relative_error(flow.sample(dit, inputs, n), ref) for n in (2, 8, 32)]
    assert errors[0] > errors[1] > errors[2]
    assert flow.relative_error(flow.sample(dit, inputs, 200), ref) < 1e-5


def test_peak_flat_in_steps_unless_trajectory_kept(models):
    dit, _ = models
    rows = flow.trajectory_peaks(dit, steps=(2, 12), target_frames=16, prompt_frames=4, device="cpu")
    assert rows[1]["peak_mib"] == pytest.approx(rows[0]["peak_mib"], rel=0.05)
    grown = (rows[1]["peak_mib_trajectory"] - rows[0]["peak_mib_trajectory"]) * 1024**2
    assert grown == pytest.approx(10 * 80 * 20 * 4, rel=0.05)  # one fp32 mel (80 x 20 frames) kept per extra step
    assert "REFUTED" not in flow.claim_trajectory(rows)


def test_checkpointing_saves_only_with_grad(models):
    dit, _ = models
    rows = flow.checkpointing_peaks(dit, target_frames=32, prompt_frames=8, device="cpu")
    peak = {(r["grad"], r["checkpointing"]): r["peak_mib"] for r in rows}
    assert peak[(False, True)] == pytest.approx(peak[(False, False)], rel=0.05)
    assert peak[(True, True)] < 0.7 * peak[(True, False)]
    no_grad, grad = flow.claim_checkpointing(rows)
    assert no_grad.startswith("REFUTED") and grad.startswith("CONFIRMED")
    assert not dit.gradient_checkpointing


def test_half_precision_keeps_norms_in_fp32(models):
    dit, _ = models
    x = torch.full((1, 4, 32), 300.0, dtype=torch.float16)  # variance overflows fp16 if computed there
    assert torch.isfinite(flow._norm(x)).all()
    half = flow.to_precision(dit, "fp16")
    assert half.x_in.weight.dtype == torch.float16 and dit.x_in.weight.dtype == torch.float32
    inputs = flow.make_inputs(TINY, 8, 4)
    ref = flow.sample(dit, inputs, 4)
    assert flow.relative_error(flow.sample(half, inputs, 4), ref) < 0.05
    with pytest.raises(ValueError, match="dtype"):
        flow.to_precision(dit, "int8")


def test_offload_lowers_peak_and_gives_the_same_audio(models):
    dit, voc = models
    inputs = flow.make_inputs(TINY, 8, 4)
    with track_peak("cpu") as resident:
        mel_a, wav_a = flow.synthesize(dit, voc, inputs, steps=2, offload=False, device="cpu")
    assert is_on_accelerator(dit, "cpu") and is_on_accelerator(voc, "cpu")  # resident: they stay
    to_host(dit), to_host(voc)
    with track_peak("cpu") as offloaded:
        mel_b, wav_b = flow.synthesize(dit, voc, inputs, steps=2, offload=True, device="cpu")
    torch.testing.assert_close(wav_a, wav_b)
    assert offloaded.peak_bytes < resident.peak_bytes
    assert not is_on_accelerator(dit, "cpu") and not is_on_accelerator(voc, "cpu")


@pytest.fixture(scope="module")
def measured(models):
    dit, voc = models
    return flow.sweep(dit, voc, steps=(2, 8), precisions=("fp32", "bf16"), offload=(False, True),
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
    steps_mem, steps_time = flow.claim_steps(measured)
    assert steps_mem.startswith("REFUTED")
    assert flow.claim_offload(measured, 8).startswith("CONFIRMED")
    assert "bfloat16" in flow.claim_precision(measured, "bfloat16", 8)


def test_recommend_8gb(measured, models):
    dit, voc = models
    act = flow.stage_activations(dit, voc, target_frames=8, prompt_frames=4, steps=2, device="cpu")
    assert act["dit"] > 0 and act["vocoder"] > 0
    t4 = flow.recommend_8gb("T4", measured, act)
    assert t4.gpt_dtype in ("float16", "float32") and t4.s2mel_dtype == "float32" and t4.reasons
    small = GpuSpec("6 GB card", (8, 6), 5.8, 360, 25)
    recipe = flow.recommend_8gb(small, measured)  # weights and IndexTTS-2's totals only
    assert recipe.offload and recipe.extra_s_per_utterance > 0 and recipe.peak_gib < 5.8
    assert any("PCIe" in r for r in recipe.reasons)
    with_act = flow.recommend_8gb(small, measured, {"dit": 1.0, "vocoder": 0.0})  # 1 MiB/s at the measured width
    grown = (with_act.peak_gib - recipe.peak_gib) * 1024  # MiB for a 120-token chunk at 4 tokens/s: 30 s
    assert grown == pytest.approx(30 * 512 / 32, abs=11)  # peak_gib is rounded to 0.01 GiB
    roomy = flow.recommend_8gb("A100-80GB", measured, act)
    assert not roomy.offload and roomy.extra_s_per_utterance == 0
    with pytest.raises(ValueError, match="headroom"):
        flow.recommend_8gb("T4", measured, act, headroom=1.5)


def test_chunk_sweep_peak_follows_longest_chunk(models):
    dit, voc = models
    text = "今天天气很好。我们去公园散步吧。你想一起来吗？当然可以！" * 2
    rows = flow.chunk_sweep(dit, voc, {"zh": text}, max_tokens=(10, None), steps=1, tokens_per_s=40,
                            prompt_frames=2, device="cpu", progress=False)
    split, whole = rows
    assert split["chunks"] > 1 and whole["chunks"] == 1
    assert split["longest_s"] < whole["longest_s"] and split["total_s"] == pytest.approx(whole["total_s"], rel=0.1)
    assert split["peak_mib"] < whole["peak_mib"]
    assert flow.claim_chunks(rows)[0].startswith("CONFIRMED")


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        flow.DiTConfig(hidden=30, heads=4)
    with pytest.raises(TypeError, match="DiTConfig"):
        flow.DiT({"hidden": 512})
    with pytest.raises(ValueError, match="steps"):
        flow.sample(flow.DiT(TINY), flow.make_inputs(TINY, 4), steps=0)


def test_seed_sweep_compares_neighbours(models):
    dit, voc = models
    result = flow.seed_sweep(dit, voc, steps=(2, 4), at_steps=4, precisions=("bfloat16",), target_frames=(8,),
                             prompt_frames=4, progress=False, device="cpu")
    parts = [(r["part"], r["steps"], r["precision"], r["offload"]) for r in result.rows]
    assert parts == [("steps", 2, "float32", False), ("steps", 4, "float32", False),
                     ("variants", 4, "float32", False), ("variants", 4, "float32", True),
                     ("variants", 4, "bfloat16", False), ("variants", 4, "bfloat16", True)]
    fp32_4 = [r for r in result.rows if r["steps"] == 4 and r["precision"] == "float32" and not r["offload"]]
    assert fp32_4[0]["error"] == fp32_4[1]["error"]  # deterministic: the same solution measured twice
    line = flow.claim_offload(result, 4)
    assert f"{fp32_4[1]['latency_s']:.2f} s" in line  # the neighbour, not the step-scan row


def test_flow_tts_speaks_text_and_turns_oom_into_advice(monkeypatch):
    from colab_tts.errors import OutOfMemoryAdvice

    torch.manual_seed(0)
    tts = flow.FlowTTS(flow.DiT(flow.SMALL_DIT).eval(), flow.Vocoder(flow.SMALL_VOCODER).eval(),
                       prompt_frames=4, device="cpu")
    short, long = tts.synthesize("Hi there.", steps=2), tts.synthesize("Hi there, how are you today?", steps=2)
    assert short.sample_rate == flow.SMALL_VOCODER.sample_rate and long.duration > short.duration > 0
    assert float(abs(torch.as_tensor(long.samples)).max()) <= 1.0 and long.timings.generate_s > 0
    with pytest.raises(ValueError, match="empty"):
        tts.synthesize("  ")

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")

    monkeypatch.setattr(flow, "synthesize", oom)
    with pytest.raises(OutOfMemoryAdvice, match="offload"):
        tts.synthesize("Hi there.", steps=2)


def test_sweep_turns_oom_into_advice(monkeypatch):
    from colab_tts.errors import OutOfMemoryAdvice

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(flow, "measure_pipeline", oom)
    monkeypatch.setattr(flow, "reference_mel", lambda *a, **k: None)
    monkeypatch.setattr(flow, "synthesize", lambda *a, **k: None)
    dit, voc = flow.DiT(flow.SMALL_DIT).eval(), flow.Vocoder(flow.SMALL_VOCODER).eval()
    with pytest.raises(OutOfMemoryAdvice, match="25 steps") as err:
        flow.sweep(dit, voc, steps=(25,), target_frames=(4,), prompt_frames=2, device="cpu", progress=False)
    assert "offload" in str(err.value)
