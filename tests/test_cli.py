import subprocess
import sys

from colab_tts.cli import main


def test_doctor_simulates_a_gpu(capsys):
    assert main(["doctor", "--gpu", "T4"]) == 0
    out = capsys.readouterr().out
    assert "Tesla T4" in out and "7.5" in out and "float16" in out


def test_doctor_unknown_gpu_is_one_clear_line(capsys):
    assert main(["doctor", "--gpu", "T5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown GPU 'T5'") and "Traceback" not in err


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "colab_tts", "doctor", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--gpu" in done.stdout


def test_plan_prints_the_breakdown_and_a_ready_vllm_command(capsys):
    assert main(["plan", "--model", "orpheus-3b", "--gpu", "T4", "--seconds", "30"]) == 0
    out = capsys.readouterr().out
    from colab_tts.kv_cache import max_model_len_for_audio

    assert "KV cache" in out and "112 KiB" in out
    from colab_tts.vllm_versions import COLAB_VLLM, default_gmu

    # no --gpu-memory-utilization / --vllm-version: the default of the vLLM the notebooks install on Colab
    assert (f"vllm serve canopylabs/orpheus-3b-0.1-ft --dtype float16 --gpu-memory-utilization "
            f"{default_gmu(COLAB_VLLM)} --max-model-len {max_model_len_for_audio(30)}") in out
    assert "--attention-backend TRITON_ATTN" in out  # a T4 (CC 7.5) on vLLM >= 0.24


def test_plan_exit_code_says_when_it_does_not_fit(capsys):
    assert main(["plan", "--gpu", "T4", "--max-model-len", "131072"]) == 1
    assert "does not fit" in capsys.readouterr().out


def test_plan_all_prints_the_catalog_and_the_whole_pipeline(capsys):
    assert main(["plan", "--model", "metavoice-1b", "--gpu", "all"]) == 0
    out = capsys.readouterr().out
    from colab_tts.hardware import GPUS

    assert all(key in out for key in GPUS)
    fits_on = out.split("fits on:")[-1].split(".")[0]
    # the first-stage GPT alone, by plan_vllm: the pipeline's "24 GB card" claim is marked disputed, not repeated
    assert "MetaVoice" in out and "disputed" in out and "T4" in fits_on and "RTX-3070" in fits_on


def test_plan_bad_input_is_one_line(capsys):
    assert main(["plan", "--gpu", "T4", "--gpu-memory-utilization", "1.5"]) == 2
    assert "gpu_memory_utilization" in capsys.readouterr().err
    assert main(["plan", "--model", "orpheus-4b"]) == 2
    assert "Unknown model" in capsys.readouterr().err


def test_synth_offline_writes_a_wav(tmp_path, capsys):
    soundfile = __import__("soundfile")
    out = tmp_path / "hello.wav"
    assert main(["synth", "Hello there.", "-o", str(out), "--offline", "--seed", "1"]) == 0
    samples, rate = soundfile.read(out)
    assert rate == 24000 and len(samples) > 0
    printed = capsys.readouterr().out
    assert "noise" in printed and f"wrote {out}" in printed
    assert main(["synth", "   ", "-o", str(tmp_path / "empty.wav"), "--offline"]) == 2
    assert "text is empty" in capsys.readouterr().err and not (tmp_path / "empty.wav").exists()


def test_a_bug_raising_typeerror_inside_a_command_is_not_bad_input(monkeypatch):
    import pytest

    from colab_tts import hardware

    def broken(*args, **kwargs):
        return len(42)  # a bug: TypeError

    monkeypatch.setattr(hardware, "detect", broken)
    with pytest.raises(TypeError):
        main(["doctor", "--gpu", "T4"])


def test_a_valueerror_from_outside_the_package_keeps_its_traceback(monkeypatch):
    import numpy as np
    import pytest

    from colab_tts import hardware

    monkeypatch.setattr(hardware, "detect", lambda simulate=None: np.zeros(3).reshape(2, 2))
    with pytest.raises(ValueError, match="reshape"):
        main(["doctor", "--gpu", "T4"])


def test_selftest_command_runs_without_cuda_and_exits_0(capsys):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is present: the full self-test is a device check")
    assert main(["selftest", "--only", "bf16_refusal", "snac_cuda"]) == 0
    out = capsys.readouterr().out
    assert "bf16_refusal" in out and "PASS" in out and "snac_cuda" in out and "SKIP" in out


def test_plan_fit_prints_the_settings_the_speed_and_a_command(capsys):
    assert main(["plan", "--model", "orpheus-3b", "--gpu", "RTX-3070", "--seconds", "30", "--fit"]) == 0
    out = capsys.readouterr().out
    assert "chosen by fit_vllm" in out and "tokens/s at batch 1" in out and "real-time factor" in out
    assert "--max-num-seqs 1" in out and "--quantization" not in out  # lossless unless asked
    assert main(["plan", "--model", "orpheus-3b", "--gpu", "RTX-3070", "--seconds", "30", "--fit",
                 "--quality", "8bit"]) == 0
    assert "--quantization fp8" in capsys.readouterr().out
    assert main(["plan", "--gpu", "RTX-3070", "--seconds", "60", "--fit", "--quality", "lossless",
                 "--tokens-per-second", "500"]) == 2
    assert "needs" in capsys.readouterr().err


def test_plan_fit_refuses_a_model_whose_weights_exceed_the_card(tmp_path, capsys):
    import json
    import re

    from colab_tts.hardware import get_gpu
    from colab_tts.models import ModelSpec

    config = dict(model_type="llama", num_hidden_layers=80, hidden_size=8192, num_attention_heads=64,
                  num_key_value_heads=8, intermediate_size=28672, vocab_size=128256, max_position_embeddings=8192,
                  tie_word_embeddings=False, torch_dtype="bfloat16")  # Meta-Llama-3-70B's config.json
    path = tmp_path / "llama-3-70b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    assert main(["plan", "--model", str(path), "--gpu", "T4", "--max-model-len", "4096", "--fit"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: llama-3-70b does not fit on Tesla T4") and "Traceback" not in err
    weights = float(re.search(r"weights are ([\d.]+) GiB", err).group(1))
    assert weights == __import__("pytest").approx(ModelSpec.from_config(config).weight_gib("float16"), rel=0.01)
    assert f"{get_gpu('T4').memory_gib:.2f} GiB" in err and "smaller model" in err and "tensor_parallel_size=" in err
    assert "fits:" not in captured.out  # no plan printed


def test_a_misspelt_kernel_library_is_one_warning_not_a_cli_that_cannot_start():
    """COLAB_TTS_VLLM_CPU_LIBRARY is read when the package imports; a typo must not turn every command into a
    traceback (vLLM's start refuses it by name: tests/test_kv_probe.py)."""
    import os

    env = dict(os.environ, COLAB_TTS_VLLM_CPU_LIBRARY="avx2")
    done = subprocess.run([sys.executable, "-m", "colab_tts", "doctor", "--help"], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0 and "--gpu" in done.stdout and "Traceback" not in done.stderr
    assert "COLAB_TTS_VLLM_CPU_LIBRARY='avx2' is not a vLLM x86 kernel library: use one of" in done.stderr
