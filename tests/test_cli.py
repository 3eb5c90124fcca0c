import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colab_tts.cli import main
from colab_tts.hardware import GPUS

GPUS_KEYS = set(GPUS)


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


def test_plan_stays_within_the_models_context(capsys):
    # metavoice-1b has no known audio rate: its whole 2,048-token context, never Orpheus' 82 tokens/s x 30 s
    assert main(["plan", "--model", "metavoice-1b", "--gpu", "T4"]) == 0
    out = capsys.readouterr().out
    assert "--max-model-len 2048" in out and "whole context" in out
    assert main(["plan", "--gpu", "H100-80GB", "--seconds", "3000"]) == 0  # 246k tokens asked, 131,072 exist
    out = capsys.readouterr().out
    assert "capped" in out and "--max-model-len 131072" in out and "246,224" not in out.split("note:")[-1][200:]
    assert main(["plan", "--gpu", "T4", "--max-model-len", "131073"]) == 2
    assert "beyond" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--seconds", "0"], ["--seconds", "> 0"]), (["--seconds", "nan"], ["finite"]),
    (["--seconds", "1e308"], ["beyond any number"]), (["--other-gib", "-1"], ["--other-gib", ">= 0"]),
    (["--quality", "8bit"], ["--fit"]), (["--max-model-len", "4096", "--seconds", "10"], ["not both"]),
    (["--model", "metavoice-1b", "--seconds", "30"], ["--tokens-per-second"]),
    (["--gpu", "RTX-3070", "--other-gib", "0.6"], ["refuses to start", "gpu_memory_utilization <= 0.87"]),
    (["--model", "nope"], ["Unknown model"]), (["--gpu", "all", "--other-gib", "900"], ["MiB", "1024"]),
])
def test_plan_flags_are_honoured_or_refused_in_one_line(argv, words, capsys):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err


def test_plan_fit_honours_dtype_tensor_parallelism_share_and_memory_held(capsys):
    assert main(["plan", "--fit", "--gpu", "T4", "--dtype", "float32", "--tensor-parallel-size", "2",
                 "--gpu-memory-utilization", "0.5"]) == 0
    out = capsys.readouterr().out
    assert all(f in out for f in ("--dtype float32", "--tensor-parallel-size 2", "--gpu-memory-utilization 0.5"))
    assert main(["plan", "--fit", "--gpu", "t4", "--seconds", "10", "--other-gib", "1.0"]) == 0  # lower case
    out = capsys.readouterr().out
    gmu = float(re.search(r"--gpu-memory-utilization ([\d.]+)", out).group(1))
    assert 14.74 * gmu <= 14.74 - 1.0 - 0.39 and "planned with 1.00 GiB held" in out


def test_plan_all_with_fit_is_a_table_whose_footer_reads_its_rows(capsys):
    assert main(["plan", "--gpu", "all", "--fit", "--seconds", "120"]) == 0
    out = capsys.readouterr().out
    fits_on = out.split("fits on:")[-1].split(" at the share")[0]
    table = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.split() and line.split()[0] in GPUS_KEYS}
    assert {k for k, v in table.items() if v == "yes"} == {k.strip() for k in fits_on.split(",")} - {"none"}
    assert "no" in table.values() and "yes" in table.values()  # 120 s of Orpheus: not on 8 GB cards


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["orpheus-3b", "gpt-sovits-v2-t2s", "indextts2-gpt"]), seconds=st.floats(1, 400),
       share=st.one_of(st.none(), st.floats(0.3, 0.95)), other=st.sampled_from([0.0, 0.5]),
       gpus=st.lists(st.sampled_from(sorted(GPUS)), min_size=1, max_size=2, unique=True), fit=st.booleans())
def test_the_tables_figures_and_footer_agree_with_the_plans_they_come_from(model, seconds, share, other, gpus, fit):
    from colab_tts.kv_cache import lowest_gmu_for, plan_vllm, request_len
    from colab_tts.kv_fit import audio_rate
    from colab_tts.models import ModelSpec
    from colab_tts.plan_table import catalog_rows, fit_rows, verdict

    spec = ModelSpec.known(model)
    max_len, _ = request_len(spec, seconds, audio_rate(model))
    assert max_len <= spec.max_position_embeddings
    rows = (fit_rows if fit else catalog_rows)(spec, max_len, gpus=gpus, other_gib=other, gpu_memory_utilization=share)
    footer = verdict(rows)
    said = set(footer.split("fits on: ")[1].split(" at the share")[0].split(", ")) - {"none"}
    assert said == {r["gpu"] for r in rows if r["fits"]}  # the footer's verdict is the table's
    for row in rows:
        assert row["fits"] == (row["KV tokens"] >= max_len)
        assert (row["at once"] >= 1) == row["fits"]
        if "max_num_seqs" in row:
            assert row["at once"] <= row["max_num_seqs"]
        if not fit and row["fits"]:
            again = plan_vllm(spec, row["gpu"], max_model_len=max_len, other_gib=other,
                              gpu_memory_utilization=row["gpu_memory_utilization"])
            assert (again.kv_cache_tokens, again.max_concurrency) == (row["KV tokens"], row["at once"])
        if not fit and not row["fits"] and row["lowest share"] is not None:
            assert row["gpu"] in footer.split("; only with a")[1]
            assert row["lowest share"] == lowest_gmu_for(spec, row["gpu"], max_model_len=max_len, other_gib=other)


def test_a_share_vllm_refuses_at_start_up_still_gets_its_lowest_share_and_the_footer_says_lowered():
    from colab_tts.kv_cache import lowest_gmu_for
    from colab_tts.models import ModelSpec
    from colab_tts.plan_table import catalog_rows, verdict

    spec = ModelSpec.known("orpheus-3b")
    rows = catalog_rows(spec, 2592, gpus=["L4", "H100-80GB"], other_gib=7.5)  # 0.92 of the card is not free
    for row in rows:
        assert not row["fits"] and "refuses to start" in row["note"]
        assert row["lowest share"] == lowest_gmu_for(spec, row["gpu"], max_model_len=2592, other_gib=7.5)
        assert row["lowest share"] < row["gpu_memory_utilization"] == 0.92
    assert "only with a lowered share: L4 (gpu_memory_utilization" in verdict(rows)
    assert "raised" not in verdict(rows)


def test_plan_fit_rates_audio_at_the_tokens_per_second_given(capsys):
    assert main(["plan", "--fit", "--gpu", "T4", "--seconds", "10", "--tokens-per-second", "41", "--other-gib", "0"]) == 0
    speed, rtf = re.search(r"(\d+) tokens/s at batch 1 = real-time factor ([\d.]+)", capsys.readouterr().out).groups()
    assert float(rtf) == pytest.approx(41 / float(speed), rel=0.03)  # not Orpheus's own 82 tokens/s


def test_plan_reads_the_memory_others_hold_leaving_out_its_own_context(monkeypatch, capsys):
    from test_kv_fit import fake_cards

    from colab_tts.kv_cache import CUDA_CONTEXT_GIB

    # an idle 8 GB card: the only memory "held" is the context the command's own reading creates, gone when it exits
    fake_cards(monkeypatch, [("NVIDIA GeForce RTX 3070", CUDA_CONTEXT_GIB)], initialized=False)
    assert main(["plan", "--gpu", "RTX-3070", "--model", "metavoice-1b"]) == 0
    out, err = capsys.readouterr()
    assert "refuses to start" not in out + err and "GiB held" not in out, out + err


def test_a_plan_that_does_not_fit_prints_no_command_to_paste(capsys):
    assert main(["plan", "--gpu", "T4", "--seconds", "1e9"]) == 1  # capped at the context, which a T4 cannot hold
    out = capsys.readouterr().out
    assert "does not fit" in out and "vllm serve" not in out and "No vLLM command line" in out
    assert main(["plan", "--gpu", "T4", "--seconds", "30"]) == 0
    assert "vllm serve" in capsys.readouterr().out
