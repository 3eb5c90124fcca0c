"""One value per figure: a quantity two notebooks show comes out the same from what each notebook calls.

Each pair below is one figure and the two calls that print it (notebook 01 vs 02, 02 section 5 vs its
MetaVoice section). A second model of the same quantity in either notebook makes its pair fail.
"""

import pytest

from colab_tts import systems
from colab_tts.lessons import make_it_fit, metavoice
from colab_tts.lessons import orpheus_speed as speed

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
