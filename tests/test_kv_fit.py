"""fit_vllm: the settings that fit, by plan_vllm's own account, with the fastest predicted decode."""

import dataclasses
import math
import re

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from colab_tts import kv_cache
from colab_tts import quantization as quant
from colab_tts.hardware import GPUS, decode_ceiling_tokens_per_s, get_gpu
from colab_tts.kv_cache import ORPHEUS_TOKENS_PER_SECOND, fit_vllm, plan_vllm
from colab_tts.kv_fit import HEADROOM_GIB, QUALITIES, FitPlan, decode_tokens_per_second, gmu_ceiling
from colab_tts.models import ModelSpec
from colab_tts.units import GIB

ORPHEUS = ModelSpec.known("orpheus-3b")
TTS = ["orpheus-3b", "gpt-sovits-v2-t2s", "indextts2-gpt"]  # decoders with a known tokens-per-second
ALLOWED = {q: set(schemes) for q, (schemes, _) in QUALITIES.items()}


def _replan(plan: FitPlan):
    """plan_vllm with exactly the engine arguments the fitted plan hands to vLLM."""
    kw = plan.engine_kwargs()
    backend = kw.pop("attention_backend", None)  # no term of the memory sum: plan_vllm derives it (CC < 8.0)
    # what others hold on the card is the machine's, not an engine argument: re-planned as the plan states it
    again = plan_vllm(plan.model, plan.gpu, vllm_version=plan.vllm_version, other_gib=plan.other_gib, **kw)
    assert again.engine_kwargs().get("attention_backend") == backend
    return again


def _plan_fields(plan) -> dict:
    return {f.name: getattr(plan, f.name) for f in dataclasses.fields(kv_cache.VllmPlan)}


def _check_fitted(plan, concurrency, quality):
    again = _replan(plan)
    assert again.fits and again.max_concurrency >= concurrency and again.max_num_seqs >= concurrency
    assert _plan_fields(again) == _plan_fields(plan)  # the plan is what plan_vllm says of these settings
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


def test_audio_beyond_the_context_is_capped_with_the_reason_and_an_explicit_length_refused():
    plan = fit_vllm("gpt-sovits-v2-t2s", "T4", audio_seconds=300)  # 300 s x 25 tokens/s > its 1,500 steps
    assert plan.max_model_len == 1500 and "capped" in plan.request_note and "7,632 tokens" in plan.request_note
    assert "request: capped" in plan.explain()
    assert fit_vllm("gpt-sovits-v2-t2s", "T4", audio_seconds=30).request_note == ""
    with pytest.raises(ValueError, match="beyond"):
        plan_vllm("metavoice-1b", "T4", max_model_len=2049)  # vLLM refuses more than max_position_embeddings
    assert plan_vllm("metavoice-1b", "T4", max_model_len=2048).fits


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
    (dict(max_model_len=1501), ValueError, ["beyond", "max_position_embeddings=1,500", "vllm/config/model.py"]),
])
def test_bad_input(kwargs, exc, words):
    with pytest.raises(exc) as err:
        fit_vllm("gpt-sovits-v2-t2s", "T4", **kwargs)
    assert all(w in str(err.value) for w in words)


# Meta-Llama-3-70B's config.json (https://huggingface.co/meta-llama/Meta-Llama-3-70B/blob/main/config.json):
# 70.55 B parameters, 131 GiB in 16-bit, far beyond any single catalog card.
LLAMA_3_70B_CONFIG = dict(
    model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=80, hidden_size=8192,
    num_attention_heads=64, num_key_value_heads=8, intermediate_size=28672, vocab_size=128256,
    max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False, torch_dtype="bfloat16")
LLAMA_3_70B = ModelSpec.from_config(LLAMA_3_70B_CONFIG, name="llama-3-70b")


def _engine_replan_fields(plan) -> dict:
    return _plan_fields(_replan(plan))


def _gib_after(word: str, msg: str) -> float:
    return float(re.search(word + r"[^\d]*([\d.]+) GiB", msg).group(1))


def test_a_70b_model_is_refused_on_a_t4_naming_weights_card_and_what_fits():
    with pytest.raises(ValueError) as err:
        fit_vllm(LLAMA_3_70B, "T4", max_model_len=4096)
    msg = str(err.value)
    assert _gib_after("weights", msg) == pytest.approx(LLAMA_3_70B.weight_gib("float16"), rel=0.01)
    assert f"{get_gpu('T4').memory_gib:.2f} GiB" in msg and "Tesla T4" in msg
    # even 4-bit weights (AWQ, ~37 GiB) exceed a T4: said, not offered as a fix
    four_bit = float(re.search(r"4-bit \((\w+)\) weights are ([\d.]+) GiB", msg).group(2))
    assert 30 < four_bit < 45
    # a smaller model: a 3 B model fits a T4 in 16-bit, an 8 B one (16 GiB) does not
    largest = float(re.search(r"at most ([\d.]+) B parameters", msg).group(1))
    assert ModelSpec.known("llama-3.2-3b").num_params / 1e9 < largest < 8.0
    # tensor parallelism on a bigger machine: the suggestion fits by plan_vllm's own account
    tp, card = re.search(r"tensor_parallel_size=(\d+) on \1 x (\S+) ", msg).groups()
    plan = plan_vllm(LLAMA_3_70B, card, tensor_parallel_size=int(tp), max_model_len=4096,
                     gpu_memory_utilization=gmu_ceiling(get_gpu(card)))
    assert plan.fits


def test_weights_refusal_names_the_quality_that_would_fit():
    with pytest.raises(ValueError) as err:  # 131 GiB of 16-bit weights on an 80 GB card; fp8 halves the linears
        fit_vllm(LLAMA_3_70B, "A100-80GB", max_model_len=4096)
    assert "quality='8bit'" in str(err.value)
    plan = fit_vllm(LLAMA_3_70B, "A100-80GB", max_model_len=4096, quality="8bit")
    assert plan.quantization == "fp8" and plan.fits
    assert _plan_fields(plan) == _engine_replan_fields(plan)


@pytest.mark.parametrize("gpu, quality", [("A100-80GB", "8bit"), ("T4", "lossless"), ("RTX-3070", "lossless"),
                                          ("L4", "4bit")])
def test_fit_returns_exactly_plan_vllm_of_its_engine_kwargs(gpu, quality):
    model = LLAMA_3_70B if gpu == "A100-80GB" else "orpheus-3b"
    plan = fit_vllm(model, gpu, max_model_len=2592, quality=quality)
    assert _plan_fields(plan) == _engine_replan_fields(plan)  # every field, warnings and inputs included
    assert plan.budget_gib <= plan.gpu.memory_gib


@st.composite
def llama_shapes(draw):
    """Llama-style decoders from 0.1 B to 70 B parameters (the bundled TTS decoders span 0.08-3.3 B)."""
    hidden = draw(st.sampled_from([512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 8192]))
    heads = hidden // 64 if hidden < 1024 else hidden // 128
    kv_heads = draw(st.sampled_from([k for k in (1, 2, 4, 8, heads) if heads % k == 0]))
    intermediate = int(hidden * draw(st.sampled_from([2.75, 3.5, 4.0])) // 256 * 256)
    config = dict(model_type="llama", num_hidden_layers=draw(st.integers(4, 80)), hidden_size=hidden,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                  vocab_size=draw(st.sampled_from([32000, 50257, 128256, 156940])), max_position_embeddings=8192,
                  tie_word_embeddings=draw(st.booleans()), torch_dtype=draw(st.sampled_from(["float16", "bfloat16"])))
    spec = ModelSpec.from_config(config, name="drawn")
    assume(0.1e9 <= spec.num_params <= LLAMA_3_70B.num_params)
    return spec


def _assert_within_the_card(plan):
    card = plan.gpu.memory_gib
    assert 0 <= plan.kv_cache_gib <= plan.budget_gib <= card * plan.gpu_memory_utilization + 1e-9
    if plan.num_blocks:
        spent = plan.weights_gib + plan.activation_gib + plan.non_torch_gib + plan.cudagraph_gib + plan.kv_cache_gib
        assert spent <= plan.budget_gib + 1e-9
    _assert_figures_agree_with_engine_args(plan)


def _assert_figures_agree_with_engine_args(plan):
    """Every figure the plan reports agrees with the engine arguments it hands to vLLM."""
    kw = plan.engine_kwargs()
    assert kw["max_model_len"] == plan.max_model_len and kw["max_num_seqs"] == plan.max_num_seqs
    assert kw["gpu_memory_utilization"] == plan.gpu_memory_utilization
    assert plan.kv_cache_tokens == plan.num_blocks * plan.block_size
    assert 0 <= plan.max_concurrency <= plan.max_num_seqs  # never more at once than vLLM schedules
    per_request = -(-plan.max_model_len // plan.block_size)
    assert plan.max_concurrency * per_request <= plan.num_blocks  # whole blocks each
    assert plan.fits == (plan.kv_cache_tokens >= plan.max_model_len)
    message = plan.message()
    assert message.startswith("fits") == plan.fits
    if plan.fits:
        assert f"{plan.kv_cache_tokens:,} KV tokens, {plan.max_concurrency:,} request(s)" in message
    if plan.startup_free_gib is not None:  # vLLM's start-up check passes with what the plan says is held
        card = plan.gpu.memory_gib
        assert card * plan.gpu_memory_utilization <= card - plan.other_gib - plan.context_gib + 1e-9
        assert f"{math.ceil((plan.startup_free_gib + plan.context_gib) * 1024):,} MiB" in plan.explain()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=llama_shapes(), gpu=st.sampled_from(list(GPUS)), quality=st.sampled_from(list(QUALITIES)),
       share=st.floats(0.05, 1.0), concurrency=st.integers(1, 4),
       max_model_len=st.sampled_from([256, 1000, 1024, 4096]), other_gib=st.sampled_from([0.0, 0.3, 1.2]))
@example(spec=LLAMA_3_70B, gpu="T4", quality="lossless", share=0.95, concurrency=1, max_model_len=4096, other_gib=0.0)
@example(spec=ModelSpec.from_config(dict(model_type="llama", num_hidden_layers=25, hidden_size=3072,
                                          num_attention_heads=24, num_key_value_heads=1, intermediate_size=8448,
                                          vocab_size=156940, max_position_embeddings=8192, tie_word_embeddings=False,
                                          torch_dtype="float16"), name="drawn"),
         gpu="RTX-3070", quality="lossless", share=0.79296875, concurrency=1, max_model_len=256, other_gib=1.2)
@example(spec=LLAMA_3_70B, gpu="A100-80GB", quality="8bit", share=0.9, concurrency=2, max_model_len=4096,
         other_gib=0.0)
def test_every_plan_stays_within_the_card_and_fit_is_plan_vllm_of_its_engine_kwargs(
        spec, gpu, quality, share, concurrency, max_model_len, other_gib):
    card = get_gpu(gpu)
    try:
        plan = plan_vllm(spec, gpu, gpu_memory_utilization=share, max_model_len=max_model_len, other_gib=other_gib)
    except ValueError as err:  # vLLM would not start at this share, or the weights exceed the budget
        # vLLM's own test, in bytes (vllm/v1/worker/utils.py 724/761 @v0.32.0), not max_startup_gmu's 0.01 steps
        total = card.memory_gib * GIB
        if math.ceil(total * share) > total - (other_gib + kv_cache.CUDA_CONTEXT_GIB) * GIB:
            assert "refuses to start" in str(err)
        else:
            budget = kv_cache.vllm_budget(spec, gpu, gpu_memory_utilization=share, max_model_len=max_model_len)
            assert not budget.weights_fit or budget.activation > budget.total
    else:
        assert plan.budget_gib == pytest.approx(card.memory_gib * share)
        _assert_within_the_card(plan)
    try:
        fitted = fit_vllm(spec, gpu, max_model_len=max_model_len, quality=quality, concurrency=concurrency,
                          other_gib=other_gib)
    except ValueError as err:
        msg = str(err)
        if "refuses to start" in msg:
            assert gmu_ceiling(card, other_gib) < 0.01
        elif "does not fit on" in msg:  # refused on the weights: every scheme the quality allows is too big here
            schemes = [s for s in QUALITIES[quality][0] if s is None or s in quant.allowed_schemes(card)]
            for scheme in schemes:
                assert not kv_cache.vllm_budget(spec, gpu, gpu_memory_utilization=gmu_ceiling(card, other_gib),
                                                max_model_len=max_model_len, quantization=scheme).weights_fit
        else:
            need, gives = map(float, re.search(r"needs ([\d.]+) GiB; .* gives ([\d.]+) GiB", msg).groups())
            assert need > gives
        return
    assert _plan_fields(fitted) == _engine_replan_fields(fitted)
    assert fitted.fits and fitted.max_concurrency >= concurrency and fitted.quantization in ALLOWED[quality]
    assert fitted.gpu_memory_utilization <= gmu_ceiling(card, other_gib)
    assert fitted.other_gib == other_gib
    assert fitted.aggregate_tokens_per_second == pytest.approx(decode_tokens_per_second(fitted, concurrency))
    _assert_within_the_card(fitted)


def test_fit_only_returns_a_share_that_passes_vllms_start_up_check():
    card = get_gpu("RTX-3070")
    headless = fit_vllm("orpheus-3b", card, audio_seconds=30)
    desktop = fit_vllm("orpheus-3b", card, audio_seconds=30, other_gib=0.6)  # a display and a browser
    # vllm/v1/worker/utils.py request_memory @v0.32.0: total x gmu must be free once vLLM's CUDA context exists
    for plan, held in ((headless, 0.0), (desktop, 0.6)):
        assert card.memory_gib * plan.gpu_memory_utilization <= card.memory_gib - held - kv_cache.CUDA_CONTEXT_GIB
        assert plan.other_gib == held and f">= {math.ceil((plan.startup_free_gib + plan.context_gib) * 1024):,} MiB" \
            in plan.explain() and "nvidia-smi" in plan.explain()
    assert desktop.gpu_memory_utilization < headless.gpu_memory_utilization
    assert desktop.gpu_memory_utilization < 0.92  # below vLLM's default: the default itself would not start
    with pytest.raises(ValueError, match="refuses to start"):
        plan_vllm("orpheus-3b", card, max_model_len=2592, other_gib=0.6)  # vLLM's default share, same desktop
    with pytest.raises(ValueError, match=r"refuses to start.*free the card"):
        fit_vllm("orpheus-3b", card, audio_seconds=30, other_gib=card.memory_gib - 0.3)
    with pytest.raises(ValueError, match=r"use gpu_memory_utilization <= 0\.8"):
        fit_vllm("orpheus-3b", card, audio_seconds=30, other_gib=0.6, gpu_memory_utilization=0.9)
    # a release without the check (V0) plans with the memory held counted against nothing but the card
    assert plan_vllm("orpheus-3b", "T4", max_model_len=2048, vllm_version="0.8.2").startup_free_gib is None


def fake_cards(monkeypatch, cards, initialized=True):
    """torch.cuda showing ``cards`` [(torch name, GiB held)] as devices 0, 1, ...; each card its catalog size."""
    import torch

    from colab_tts import hardware

    sizes = {name: hardware.get_gpu(name).memory_gib * 2**30 for name, _ in cards}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=0: cards[d][0])
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda d=0: (sizes[cards[d][0]] - cards[d][1] * 2**30, sizes[cards[d][0]]))


def test_other_gib_now_reads_the_card_present_and_is_zero_without_one(monkeypatch):
    import torch

    from colab_tts import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.other_gib_now("T4") == 0.0
    fake_cards(monkeypatch, [("NVIDIA GeForce RTX 3070", 0.75)])
    assert hardware.other_gib_now("RTX-3070") == pytest.approx(0.75)
    assert hardware.other_gib_now() == pytest.approx(0.75)
    assert hardware.other_gib_now("H100-80GB") == 0.0  # planning another card than the one present


def test_other_gib_now_knows_a_card_by_its_name_not_its_size_and_reads_every_device(monkeypatch):
    from colab_tts import hardware

    # twins in size: an L4 and an A10G hold 22 GiB, an A100 and an H100 80GB 79 GiB, an RTX 3070 and a 4060 8 GB
    fake_cards(monkeypatch, [("NVIDIA L4", 1.5), ("Tesla T4", 0.5), ("NVIDIA H100 80GB HBM3", 2.0),
                             ("NVIDIA GeForce RTX 4060", 0.25)])
    assert hardware.other_gib_now("A10G") == 0.0 and hardware.other_gib_now("A100-80GB") == 0.0
    assert hardware.other_gib_now("RTX-3070") == 0.0
    assert hardware.other_gib_now("L4") == pytest.approx(1.5) and hardware.other_gib_now("l4") == pytest.approx(1.5)
    assert hardware.other_gib_now("T4") == pytest.approx(0.5)  # device 1: the card planned, not device 0
    assert hardware.other_gib_now("H100-80GB") == pytest.approx(2.0)
    assert hardware.other_gib_now("T4", device=0) == 0.0 and hardware.other_gib_now("T4", device=1) == pytest.approx(0.5)
    custom = hardware.GpuSpec("NVIDIA GeForce RTX 4060", (8, 9), 7.75, 272, 15)  # what detect() builds
    assert hardware.other_gib_now(custom) == pytest.approx(0.25)


def test_other_gib_now_leaves_out_the_context_its_own_reading_created_when_asked(monkeypatch):
    from colab_tts import hardware
    from colab_tts.kv_cache import CUDA_CONTEXT_GIB

    fake_cards(monkeypatch, [("Tesla T4", 1.0)], initialized=False)  # the reading creates this process's context
    assert hardware.other_gib_now("T4") == pytest.approx(1.0)  # a notebook keeps its context while vLLM runs
    assert hardware.other_gib_now("T4", own_context=False) == pytest.approx(1.0 - CUDA_CONTEXT_GIB)
    fake_cards(monkeypatch, [("Tesla T4", 1.0)], initialized=True)  # a context there before: it stays held
    assert hardware.other_gib_now("T4", own_context=False) == pytest.approx(1.0)


def test_orpheus_on_the_card_present_is_planned_with_what_others_hold_there(monkeypatch):
    from colab_tts.kv_cache import max_startup_gmu
    from colab_tts.orpheus import engine_kwargs_for

    fake_cards(monkeypatch, [("NVIDIA GeForce RTX 3070", 0.8)])  # a desktop and a browser on an 8 GB card
    kwargs, plan = engine_kwargs_for("RTX-3070", 10, vllm_version="0.32.0")
    assert plan.other_gib == pytest.approx(0.8)
    assert kwargs["gpu_memory_utilization"] == max_startup_gmu("RTX-3070", 0.8) < 0.92  # vLLM's check passes
    kwargs, plan = engine_kwargs_for("RTX-3070", 10, vllm_version="0.32.0", other_gib=0.0)  # told: as told
    assert plan.other_gib == 0.0 and kwargs["gpu_memory_utilization"] == 0.92


def test_one_rule_says_which_card_would_fit():
    with pytest.raises(ValueError) as err:  # bf16 weights (6.2 GiB) beyond half of an 8 GB card
        plan_vllm("orpheus-3b", "RTX-3070", gpu_memory_utilization=0.5, max_model_len=8192)
    named = str(err.value).split("gmu_ceiling): ")[1].split(";")[0].split(", ")
    assert named == kv_cache.cards_that_fit("orpheus-3b", max_model_len=8192) and "RTX-3070" not in named
    for key in GPUS:  # each card named fits at its highest safe share by plan_vllm; none left out does
        try:
            fits = plan_vllm("orpheus-3b", key, max_model_len=8192, gpu_memory_utilization=gmu_ceiling(GPUS[key])).fits
        except ValueError:
            fits = False
        assert fits == (key in named), key
    # fit_vllm's "a bigger card" is the same rule, above the card asked about
    assert kv_fit_bigger("orpheus-3b", "RTX-3070") == [k for k in named if GPUS[k].memory_gib > GPUS["RTX-3070"].memory_gib]


def kv_fit_bigger(model, gpu):
    from colab_tts.kv_fit import _bigger_cards

    return _bigger_cards(ModelSpec.known(model), get_gpu(gpu), dict(max_model_len=8192), 1)


def test_fit_honours_the_sampler_the_log_names_and_a_float32_plan_says_float32():
    pip = fit_vllm("orpheus-3b", "L4", audio_seconds=30, vllm_version="0.10.1")
    flashinfer = fit_vllm("orpheus-3b", "L4", audio_seconds=30, vllm_version="0.10.1", flashinfer_sampler=True)
    assert flashinfer.inputs["flashinfer_sampler"] is True and pip.inputs["flashinfer_sampler"] is None
    assert flashinfer.sampler_gib < pip.sampler_gib  # FlashInfer samples without sorting the vocabulary
    full = fit_vllm("orpheus-3b", "A100-40GB", audio_seconds=30, dtype="float32")
    assert full.dtype == "float32" and "32-bit weights (float32)" in full.quality_note
    assert full.kernel == "cuBLAS (float32)"
