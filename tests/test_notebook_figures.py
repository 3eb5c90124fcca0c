"""One value per figure: a quantity two notebooks show comes out the same from what each notebook calls.

Each test below is one figure and the calls that print it, named by notebook and section (00's GPU table,
01's speed limit, 02's sections, 05's plan). A second model of the same quantity in any notebook makes its
test fail: weights are compared exactly (one function computes them all), shown rounding where a notebook
prints a rounded figure.
"""

import math
import re

import matplotlib
import pytest

from colab_tts import hardware, kv_cache, plots, systems
from colab_tts.lessons import make_it_fit, metavoice
from colab_tts.lessons import orpheus_speed as speed
from colab_tts.models import ModelSpec, known_models

matplotlib.use("Agg")

QUALITY_BITS = {"lossless": 16, "8bit": 8, "4bit": 4}


@pytest.mark.parametrize("gpu", ["T4", "L4"])
def test_orpheus_batch1_ceiling_per_weight_format_is_one_value_in_01_and_02(gpu):
    in01 = {r["weights"]: r for r in speed.real_time_rows(gpu)}  # 01 section 6
    in02 = {r["quality"]: r for r in make_it_fit.realtime_rows("orpheus-3b", gpu, 30)}  # 02 section 7
    for quality, bits in QUALITY_BITS.items():
        assert in02[quality]["tokens/s"] == pytest.approx(in01[f"{bits}-bit"]["ceiling tokens/s"], abs=0.05)
        assert in02[quality]["engines reach tokens/s"] == in01[f"{bits}-bit"]["engines reach tokens/s"]
        assert in02[quality]["cited share"] == in01[f"{bits}-bit"]["cited share"]
        assert in02[quality]["real time"] == in01[f"{bits}-bit"]["real time?"]  # one verdict, not two rules


def test_orpheus_16bit_ceiling_in_01s_weights_line_is_02s():
    line = speed.weights_line("T4")  # 01 section 6, first line
    lossless = make_it_fit.realtime_rows("orpheus-3b", "T4", 30)[0]  # 02 section 7
    assert f"ceiling {lossless['tokens/s']:.1f} tokens/s" in line


@pytest.mark.parametrize("quality", ["lossless", "4bit"])
def test_orpheus_batched_throughput_is_one_value_in_01_and_02(quality):
    bits = QUALITY_BITS[quality]
    in01 = {r["batch"]: r for r in speed.speed_ceiling_rows("T4", bits=(bits,))}  # 01's ceiling table
    in02 = make_it_fit.batching_rows("orpheus-3b", "T4", 30, quality, concurrency=(1, 2, 4, 8, 16))  # 02 section 7
    for row in in02:
        if row["fits"] == "yes":
            assert row["aggregate tokens/s"] == round(in01[row["requests"]]["tokens/s total"])


def test_the_cited_a10g_share_is_one_value_in_01_and_02():
    in01 = next(r for r in speed.efficiency_rows() if r["what"].startswith("Orpheus"))["share of the roofline"]
    assert make_it_fit.cited_share() == pytest.approx(in01, rel=1e-9)
    assert f"{in01:.0%} of it" in make_it_fit.roofline_caveat()
    assert make_it_fit.compute_ceiling_tokens_per_s("orpheus-3b", "T4") == speed.compute_ceiling("T4")


def test_metavoices_24gb_claim_has_one_verdict_across_02s_sections():
    note = next(r["note"] for r in systems.fit_table(30, "float16", gpus=["T4"]) if "MetaVoice" in r["system"])
    assert metavoice.CLAIM_STATUS in note  # section 5's fit table
    assert metavoice.CLAIM_STATUS in metavoice.verdict()  # the MetaVoice section
    assert "refuted" not in metavoice.verdict() + note


def _fit_row(label_start: str, gpu: str, seconds: float = 30) -> dict:
    return next(r for r in systems.fit_table(seconds, "float16", gpus=[gpu]) if r["system"].startswith(label_start))


def _bar_width(fig, label: str) -> float:
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    return ax.patches[names.index(label)].get_width()


@pytest.mark.parametrize("gpu", ["T4", "L4"])
def test_orpheus_16bit_weights_are_one_value_in_00_01_02(gpu):
    shown = {
        "00 weights table": next(r for r in hardware.weights_fit_rows("float16", gpus=[gpu])
                                 if r["model"].startswith("Orpheus"))["float16 GiB"],
        "00/02 fit table": _fit_row("Orpheus", gpu)["weights GiB"],
        "01 speed limit": speed.speed_ceiling_rows(gpu, bits=(16,), batches=(1,))[0]["weight GiB"],
        "01 plan": speed.plan(gpu, 16).weights_gib,
        "02 section 1": ModelSpec.known("orpheus-3b").weight_gib("float16"),
        "02 section 2 (PR #77's T4 plan)": kv_cache.plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0.9,
                                                              dtype="float16", vllm_version="0.8.2").weights_gib,
        "02 section 7": make_it_fit.plan_rows(make_it_fit.quality_plans("orpheus-3b", gpu, 30,
                                                                        qualities=("lossless",)))[0]["weights GiB"],
    }
    assert len(set(shown.values())) == 1, shown
    gib = shown["02 section 1"]
    assert f"16-bit: {gib:.2f} GiB of weights" in speed.weights_line(gpu)  # 01's first speed line
    fig = plots.weights_fit("float16")  # 00's bar chart
    assert _bar_width(fig, "Orpheus 3B (LLM)") == gib
    matplotlib.pyplot.close(fig)
    if hardware.get_gpu(gpu).memory_gib < 16:  # 00's advice names the weights on cards under 16 GB
        assert f"needs {gib:.1f} GiB of weights" in " ".join(hardware.recommendations(gpu))


def test_metavoice_first_stage_is_one_size_in_00_and_02():
    spec = ModelSpec.known("metavoice-1b")
    weights = next(r for r in hardware.weights_fit_rows("float16", gpus=["T4"]) if r["model"].startswith("MetaVoice"))
    fit = _fit_row("MetaVoice", "T4")
    assert weights["float16 GiB"] == fit["weights GiB"] == spec.weight_gib("float16")  # 00, 00/02 section 5
    first = metavoice.stage_table("T4")[0]  # 02's MetaVoice section: upstream's layout, no vLLM row padding
    assert first["params"] == spec.num_params
    assert f"{first['gib']:.2f}" == f"{fit['weights GiB']:.2f}"  # both tables print 2 decimals
    assert f"is {spec.num_params / 1e9:.2f} B parameters, {fit['weights GiB']:.2f} GiB in fp16" in metavoice.verdict()


def test_snac_beside_orpheus_is_one_size_in_00_and_02():
    weights = next(r for r in hardware.weights_fit_rows("float16", gpus=["T4"]) if r["model"].startswith("SNAC"))
    assert weights["float16 GiB"] == _fit_row("Orpheus", "T4")["other GiB"]


def test_orpheus_kv_per_token_is_one_value_in_01_02_and_the_fit_table():
    spec = ModelSpec.known("orpheus-3b")
    per_token = kv_cache.kv_bytes_per_token(spec, "float16")  # 02 section 1
    assert speed.plan("T4", 16).kv_bytes_per_token == per_token  # 01's roofline reads it
    row = _fit_row("Orpheus", "T4")  # 00 and 02 section 5
    assert row["KV GiB"] == per_token * row["tokens"] / hardware.GIB
    pr77 = kv_cache.plan_vllm("orpheus-3b", "T4", gpu_memory_utilization=0.9, dtype="float16", vllm_version="0.8.2")
    assert pr77.kv_bytes_per_token == per_token  # 02 section 2


def test_a_streams_ceiling_in_05_is_02s_batching_row():
    # 05 prints serve.predicted_plan's per-stream tokens/s for CONCURRENCY requests; 02 section 7 the same per
    # request count
    from colab_tts import serve

    for quality in ("lossless", "4bit"):
        plan = serve.predicted_plan("T4", seconds=30, concurrency=4, quality=quality)
        in05 = plan.fit
        assert f"{in05.stream_tokens_per_second:.0f} tokens/s" in plan.realtime_line()
        in02 = {r["requests"]: r for r in make_it_fit.batching_rows("orpheus-3b", "T4", 30, quality,
                                                                      concurrency=(4,))}
        assert in02[4]["per stream"] == round(in05.stream_tokens_per_second, 1)
        assert in02[4]["aggregate tokens/s"] == round(in05.aggregate_tokens_per_second)


def test_no_weights_figure_is_the_bare_parameter_count():
    # the un-padded count (6.15 GiB for Orpheus) is a different number from what vLLM holds (6.18): no table shows it
    spec = ModelSpec.known("orpheus-3b")
    bare = spec.num_params * 2 / hardware.GIB
    printed = " ".join([speed.weights_line("T4"), *hardware.recommendations("T4"),
                        str(hardware.weights_fit_rows("float16", gpus=["T4"])),
                        str(systems.fit_table(30, "float16", gpus=["T4"]))])
    assert f"{bare:.2f}" != f"{spec.weight_gib('float16'):.2f}"
    assert not re.search(rf"\b{re.escape(f'{bare:.2f}')}\b|{re.escape(repr(bare))}", printed)


@pytest.mark.parametrize("name", sorted(known_models()))
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_02s_weights_line_multiplies_out_to_the_figure_every_table_shows(name, dtype):
    # 02 section 1 printed "3.30 B parameters = 6.18 GiB in float16": 3.30 x 2 bytes is 6.15. The line now
    # shows each term with its inputs; the terms are weight_bytes and each multiplies out as printed
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import nbformat
    import nbrules

    spec = ModelSpec.known(name)
    assert sum(b for _, b in spec.weight_terms(dtype)) == spec.weight_bytes(dtype)
    line = spec.weights_arithmetic(dtype)
    assert f"= {spec.weight_gib(dtype):.2f} GiB" in line
    assert nbrules.arithmetic_problem([nbformat.v4.new_output("stream", name="stdout", text=line)]) is None
    for how, b in spec.weight_terms(dtype):  # every factor shown, so the product is the term
        factors = [float(x.replace(",", "")) for x in re.findall(r"(?<![\w.,])(\d[\d,]*)(?=(?: [a-z]+)? x| bytes)",
                                                                  how.split(":")[-1])]
        assert math.prod(factors) == b, how


@pytest.mark.parametrize("tokens_per_s", [4.0, 2.5])
def test_03s_kv_segment_line_gives_the_rates_its_token_count_comes_from(tokens_per_s):
    # 03's recipe said "~1500 semantic tokens (~30 s of speech at an assumed 4 tokens/s)": 30 s x 4 is not
    # 1500, the 50 semantic tokens per second were left out. The line now names both rates
    from colab_tts.lessons import diffusion_8gb

    recipe = diffusion_8gb.recommend_8gb("RTX-4060", tokens_per_s=tokens_per_s)
    line = next(r for r in recipe.reasons if r.startswith("counted: the GPT's KV cache"))
    m = re.search(r"~(\d+) semantic tokens \((\d+) text tokens at an assumed ([\d.]+) per second of speech = "
                  r"~([\d.]+) s, x ([\d.]+) semantic tokens per second\)", line)
    assert m, line
    semantic, text, rate, seconds, per_s = (float(g) for g in m.groups())
    assert seconds == pytest.approx(text / rate) and semantic == round(seconds * per_s)


@pytest.mark.parametrize("gpu, kwargs", [("T4", {}), ("A100-80GB", {"tensor_parallel_size": 2}),
                                         ("L4", {"kv_cache_dtype": "fp8"})])
def test_every_plans_kv_per_token_line_multiplies_out(gpu, kwargs):
    # 02 and 05 print plan_vllm's explain(): "2 x 28 layers x 8 kv heads x 128 x 2 B = 112 KiB" read "2 B" as
    # two billion beside "3.3 B parameters"; in bytes, the line is checked like every printed product
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import nbformat
    import nbrules

    text = kv_cache.plan_vllm("orpheus-3b", gpu, max_model_len=4096, **kwargs).explain()
    line = next(x for x in text.splitlines() if "KV per token" in x)
    assert re.search(r"x \d+ bytes? = ", line), line
    assert nbrules.arithmetic_problem([nbformat.v4.new_output("stream", name="stdout", text=text)]) is None
