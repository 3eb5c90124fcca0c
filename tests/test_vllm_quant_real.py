"""Real vLLM (vllm-cpu 0.32.0) with the quantization settings the planner hands out.

What vllm-cpu does with each, started in the session's one engine subprocess (tests/vllm_engines.py) on tiny random-weight models. Where vLLM's
choice depends on the CPU, ``colab_tts.vllm_cpu`` says which branch this CPU takes (the other branch of
each switch is covered on any CPU by tests/test_vllm_cpu.py), and each test reports the path it ran:
- an fp8 KV cache: accepted only on x86 with AVX-512 or AMX; there its block count must be the planner's
  fp8 page arithmetic, elsewhere vLLM must refuse;
- AWQ weights (a random AWQ-format checkpoint): the engine loads them, and the bytes it holds must be
  exactly what colab_tts.quantization says an AWQ model weighs on this CPU's branch (W4A16 keeps the
  checkpoint's bytes, W4A8 on AMX more); the GEMM then runs, or fails naming that branch's kernel;
- online fp8 weights: no kernel in this build; the engine must refuse rather than run;
- a ``fit_vllm`` plan: its engine_kwargs start an engine that generates, with the KV blocks of the
  planner's arithmetic.
"""

import pytest
import torch
from vllm_engines import AWQ_CONFIG, KV_SPACE_GIB
from vllm_engines import QUANT_CONFIG as CONFIG

from colab_tts import quantization as quant
from colab_tts import vllm_cpu
from colab_tts.hardware import GIB
from colab_tts.kv_cache import kv_blocks
from colab_tts.models import ModelSpec

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

INT4_KERNEL = {vllm_cpu.W4A16: "cpu_gemm_wna16", vllm_cpu.W4A8: "int4_scaled_mm_cpu"}

@pytest.fixture(scope="module")
def engines(vllm_engines):
    return vllm_engines["quant"]


def test_fp8_kv_cache_is_the_planners_arithmetic_where_vllm_accepts_it(engines, report_vllm_path):
    got = engines["fp8_kv"]
    report_vllm_path(got["path"])
    assert got["kwargs"]["kv_cache_dtype"] == "fp8"
    if vllm_cpu.fp8_kv_cache_supported():
        spec = ModelSpec.from_config(CONFIG)
        assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, "fp8", block_size=got["block_size"])
        assert len(got["generated"]) == 4
    else:
        assert "FP8 KV cache on CPU requires x86 with AVX-512 or AMX" in got["error"]


def test_awq_weights_in_the_engine_are_the_planners_bytes_for_this_cpus_branch(engines, report_vllm_path):
    got = engines["awq"]
    report_vllm_path(got["path"])
    spec = ModelSpec.from_config(AWQ_CONFIG)
    branch = vllm_cpu.int4_weight_path(torch.bfloat16)
    assert ("W4A8" in got["path"]) == (branch == vllm_cpu.W4A8) and "CPUWNA16LinearKernel" in got["path"]
    # what the engine holds (parameters, the 500-row vocabulary padded to 512, and the rotary cos/sin cache, one
    # buffer shared by every layer) is ModelSpec.weight_bytes less the scheme's saving
    assert got["rope_cache_bytes"] == spec.max_position_embeddings * spec.head_dim * 2
    assert got["param_bytes"] + got["rope_cache_bytes"] == quant.weight_bytes(spec, "bfloat16", "awq", platform=branch)
    assert got["param_bytes"] < 0.5 * quant.weight_bytes(spec, "bfloat16")
    assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, "bfloat16", block_size=got["block_size"])
    # a build with this branch's GEMM generates; one without it fails naming that kernel
    assert len(got.get("generated", [])) == 4 or INT4_KERNEL[branch] in got["generate_error"]


def test_this_cpu_build_refuses_online_fp8_weights(engines, report_vllm_path):
    got = engines["fp8_weights"]
    report_vllm_path(got["path"])  # on a GPU the same argument runs Marlin FP8 or CUTLASS FP8
    assert len(got.get("generated", [])) == 4 or "static_scaled_fp8_quant" in got.get("error", "")


def test_fit_vllm_engine_kwargs_start_a_real_engine(engines, report_vllm_path):
    got = engines["fit"]
    report_vllm_path(got["path"])
    spec = ModelSpec.from_config(CONFIG)
    assert len(got["generated"]) == 4
    assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, got["dtype"], block_size=got["block_size"])
    assert got["kwargs"]["max_model_len"] == 300 and "quantization" not in got["kwargs"]
