import subprocess
import sys

import pytest
import torch
from tiny_flow import TINY_DIT as TINY

from colab_tts import flow
from colab_tts.cited import value
from colab_tts.memory import is_on_accelerator, to_host, track_peak

pytestmark = pytest.mark.usefixtures("one_thread")


def test_real_sizes():
    assert 80e6 < flow.param_count(flow.INDEXTTS2_DIT) < 110e6
    # The layout we build reproduces the parameter count BigVGAN v2's README publishes.
    assert flow.param_count(flow.BIGVGAN_V2_22K) == pytest.approx(value("indextts2.bigvgan_v2_params"), rel=0.02)
    assert flow.param_count(TINY) == sum(p.numel() for p in flow.DiT(TINY).parameters())  # meta count = built


def test_runtime_does_not_import_the_lesson():
    code = "import sys, colab_tts.flow, colab_tts.memory, colab_tts.text; print(any('lessons' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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


def test_half_precision_keeps_norms_in_fp32(models):
    dit, _ = models
    x = torch.full((1, 4, 32), 300.0, dtype=torch.float16)  # variance overflows fp16 if computed there
    assert torch.isfinite(flow._norm(x)).all()
    half = flow.to_precision(dit, "fp16")
    assert half.x_in.weight.dtype == torch.float16 and dit.x_in.weight.dtype == torch.float32
    inputs = flow.make_inputs(TINY, 8, 4)
    ref = flow.sample(dit, inputs, 4)
    deviation = (flow.sample(half, inputs, 4) - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()
    assert deviation < 0.05
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


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        flow.DiTConfig(hidden=30, heads=4)
    with pytest.raises(TypeError, match="DiTConfig"):
        flow.DiT({"hidden": 512})
    with pytest.raises(ValueError, match="steps"):
        flow.sample(flow.DiT(TINY), flow.make_inputs(TINY, 4), steps=0)
