"""`python -m colab_tts selftest`: without CUDA it runs what it can, names each skipped CUDA check, exits 0."""

import pytest
import torch

from colab_tts import selftest
from colab_tts.cli import main

CUDA_CHECKS = [n for n in selftest.CHECKS if n != "bf16_refusal"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the full run is a device check")


@no_cuda
def test_without_cuda_every_cuda_check_is_skipped_by_name_and_it_exits_0(capsys):
    assert selftest.main() == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line.split()[0] in selftest.CHECKS}
    assert rows == {"bf16_refusal": "PASS"} | {name: "SKIP" for name in CUDA_CHECKS}
    assert "skipped: " + ", ".join(CUDA_CHECKS) in out and "no CUDA device" in out


def test_a_failing_check_is_reported_and_the_exit_code_is_1(monkeypatch, capsys):
    def broken():
        raise AssertionError("tokens differ")

    monkeypatch.setitem(selftest.CHECKS, "cuda_graph_decode", broken)
    assert selftest.main(only=["bf16_refusal", "cuda_graph_decode"]) == 1
    out = capsys.readouterr().out
    assert "cuda_graph_decode  FAIL" in out and "AssertionError: tokens differ" in out and "bf16_refusal" in out


def test_the_bf16_check_fails_if_resolve_dtype_let_bfloat16_through(monkeypatch):
    from colab_tts import hardware

    monkeypatch.setattr(hardware, "resolve_dtype", lambda req, gpu, strict=False: hardware.DtypeChoice("bfloat16", ""))
    assert selftest.run(["bf16_refusal"])[0].status == "FAIL"


def test_unknown_check_name_is_one_clear_error(capsys):
    assert main(["selftest", "--only", "snac"]) == 2
    assert "snac_cuda" in capsys.readouterr().err


def test_snac_check_runs_on_the_cpu():
    """The CUDA check's code path (entry points, shapes) with device='cpu': CPU against CPU."""
    assert "max |CUDA - CPU| = 0.0e+00" in selftest.check_snac_cuda(device="cpu")



def test_track_peak_check_runs_on_the_cpu():
    assert selftest.check_track_peak_cuda(device="cpu").startswith("peak 64.0 MiB")


def test_cuda_graph_check_compares_tokens_and_catches_a_difference(monkeypatch):
    """The check's wiring (model, segments, static cache, fixed shapes) on the CPU, with the compiled step
    replaced: the same step gives the same tokens; a step that shifts the logits is caught."""
    from colab_tts import compiled

    monkeypatch.setattr(compiled, "compiled_step", lambda model: model.decode_step)
    assert "identical" in selftest.check_cuda_graph_decode(device="cpu")

    def shifted(model):
        def step(*args, **kwargs):
            logits = model.decode_step(*args, **kwargs)
            return logits.roll(1, dims=-1)
        return step

    monkeypatch.setattr(compiled, "compiled_step", shifted)
    with pytest.raises(AssertionError, match="greedy tokens"):
        selftest.check_cuda_graph_decode(device="cpu")
