"""fit_vllm: the settings that fit, by plan_vllm's own account, with the fastest predicted decode."""

import dataclasses
import re

import pytest

from colab_tts import kv_cache
from colab_tts import quantization as quant
from colab_tts.hardware import GPUS, decode_ceiling_tokens_per_s, get_gpu
from colab_tts.kv_cache import ORPHEUS_TOKENS_PER_SECOND, fit_vllm, plan_vllm
from colab_tts.kv_fit import HEADROOM_GIB, QUALITIES, FitPlan, decode_tokens_per_second, gmu_ceiling
from colab_tts.models import ModelSpec

ORPHEUS = ModelSpec.known("orpheus-3b")
TTS = ["orpheus-3b", "gpt-sovits-v2-t2s", "indextts2-gpt"]  # decoders with a known tokens-per-second
ALLOWED = {q: set(schemes) for q, (schemes, _) in QUALITIES.items()}


def _replan(plan: FitPlan):
    """plan_vllm with exactly the engine arguments the fitted plan hands to vLLM."""
    kw = plan.engine_kwargs()
    backend = kw.pop("attention_backend", None)  # no term of the memory sum: plan_vllm derives it (CC < 8.0)
    again = plan_vllm(plan.model, plan.gpu, vllm_version=plan.vllm_version, **kw)
    assert again.engine_kwargs().get("attention_backend") == backend
    return again


def _check_fitted(plan, concurrency, quality):
    again = _replan(plan)
    assert again.fits and again.max_concurrency >= concurrency and again.max_num_seqs >= concurrency
    assert again.num_blocks == plan.num_blocks  # the plan is what plan_vllm says of these settings
    assert plan.gpu_memory_utilization <= gmu_ceiling(plan.gpu)
    assert plan.quantization in ALLOWED[quality]
    if quality == "lossless":
        assert "kv_cache_dtype" not in plan.engine_kwargs()


@pytest.mark.parametrize("seconds", [10, 30, 60])
def test_fits_by_plan_vllms_own_account_across_the_catalog(seconds):
    fitted = refused = 0
    for model in TTS + ["metavoice-1b"]:
        spec = ModelSpec.known(model)
        for gpu in GPUS:
            for quality in QUALITIES:
                kw = (dict(max_model_len=spec.max_position_embeddings) if model == "metavoice-1b"
                      else dict(audio_seconds=seconds))
                try:
                    plan = fit_vllm(model, gpu, quality=quality, **kw)
                except ValueError as err:
                    msg = str(err)
                    beyond = "beyond" in msg and "context" in msg  # e.g. 60 s of GPT-SoVITS > its 1500 steps
                    missing = re.search(r"needs ([\d.]+) GiB; the best option .* gives ([\d.]+) GiB on", msg)
                    assert beyond or (missing and float(missing.group(1)) > float(missing.group(2))), msg
                    refused += not beyond
                    continue
                _check_fitted(plan, 1, quality)
                fitted += 1
    assert fitted > 3 * refused  # most of the catalog fits something that memory allows


def test_orpheus_on_an_8gb_card_fits_with_settings_the_default_misses():
    assert not plan_vllm("orpheus-3b", "RTX-3070", max_model_len=2592).fits  # vLLM's defaults: no KV room
    plan = fit_vllm("orpheus-3b", "RTX-3070", audio_seconds=30)
    assert not plan.default_plan_fits and plan.fits and plan.quantization is None
    assert plan.max_num_seqs == 1  # the sampler warm-up of 256 x 156,940 logits is what the default cannot afford
    assert plan.headroom_gib >= HEADROOM_GIB
    assert plan.max_model_len == kv_cache.max_model_len_for_audio(30, ORPHEUS_TOKENS_PER_SECOND)


def test_concurrency_is_held_at_once():
    plan = fit_vllm("orpheus-3b", "T4", audio_seconds=30, concurrency=8)
    _check_fitted(plan, 8, "lossless")
    assert plan.aggregate_tokens_per_second > 5 * plan.tokens_per_second  # batching amortises the weights
    assert plan.stream_tokens_per_second < plan.tokens_per_second  # each stream also reads its own KV


def test_refuses_with_the_missing_amount():
    with pytest.raises(ValueError) as err:
        fit_vllm("orpheus-3b", "RTX-3070", audio_seconds=60, concurrency=4)
    msg = str(err.value)
    need, gives = map(float, re.search(r"needs ([\d.]+) GiB; .* gives ([\d.]+) GiB", msg).groups())
    assert need > gives and gives == pytest.approx(get_gpu("RTX-3070").memory_gib * gmu_ceiling(get_gpu("RTX-3070")),
                                                   abs=0.05)
    assert "quality='8bit'" in msg and "4-bit" in msg and "GiB card" in msg


def test_quality_is_the_persons_choice():
    assert fit_vllm("orpheus-3b", "L4", audio_seconds=30).quantization is None
    eight = fit_vllm("orpheus-3b", "L4", audio_seconds=30, quality="8bit")
    four = fit_vllm("orpheus-3b", "L4", audio_seconds=30, quality="4bit")
    assert eight.quantization in (None, "fp8") and four.quantization in ALLOWED["4bit"]
    assert four.tokens_per_second >= eight.tokens_per_second  # a wider search never picks a slower plan
    assert "SNAC" in four.quality_note and "huggingface.co/cstr/orpheus-3b-base-GGUF" in four.quality_note


def test_orpheus_on_a_t4_real_time_only_below_16_bit_by_the_roofline():
    lossless = fit_vllm("orpheus-3b", "T4", audio_seconds=30)
    four = fit_vllm("orpheus-3b", "T4", audio_seconds=30, quality="4bit")
    assert lossless.real_time_factor > 1.5  # ~47 of the 82 tokens/s real time needs
    # the smallest 4-bit layout vLLM keeps wins: symmetric GPTQ drops its zero points, AWQ keeps them
    assert four.real_time_factor < 1 and four.quantization == "gptq"
    assert quant.weight_bytes(ORPHEUS, "float16", "gptq") < quant.weight_bytes(ORPHEUS, "float16", "awq")
    assert "kv_cache_dtype" not in four.engine_kwargs()


def test_roofline_is_bandwidth_over_bytes_read():
    plan = fit_vllm("orpheus-3b", "T4", audio_seconds=30)
    weights_only = decode_tokens_per_second(plan, 1, context=0)  # Orpheus ties its embedding to the LM head
    assert weights_only == pytest.approx(decode_ceiling_tokens_per_s(plan.weights_gib * 2**30, "T4"))
    assert plan.tokens_per_second < weights_only  # the KV read costs something


def test_engine_kwargs_are_engine_args_fields():
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    fields = {f.name for f in dataclasses.fields(arg_utils.EngineArgs)}
    for quality in QUALITIES:
        kwargs = fit_vllm("orpheus-3b", "RTX-3070", audio_seconds=30, quality=quality).engine_kwargs()
        assert set(kwargs) <= fields
        arg_utils.EngineArgs(model="unused", **kwargs)


def test_importable_where_the_issue_says():
    from colab_tts.kv_fit import fit_vllm as direct

    assert kv_cache.fit_vllm is direct
    with pytest.raises(AttributeError):
        kv_cache.no_such_name  # noqa: B018


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(), ValueError, ["audio_seconds", "max_model_len"]),
    (dict(audio_seconds=30, quality="3bit"), ValueError, ["quality", "lossless"]),
    (dict(audio_seconds=30, concurrency=0), ValueError, ["concurrency"]),
    (dict(audio_seconds=300), ValueError, ["beyond"]),
])
def test_bad_input(kwargs, exc, words):
    with pytest.raises(exc) as err:
        fit_vllm("gpt-sovits-v2-t2s", "T4", **kwargs)
    assert all(w in str(err.value) for w in words)
