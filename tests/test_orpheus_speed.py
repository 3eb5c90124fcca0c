"""Notebook 01's speed lesson: the roofline verdict uses the efficiency engines reach, not the bare ceiling."""

import pytest

from colab_tts.lessons import orpheus_speed as speed
from colab_tts.snac_decode import TOKENS_PER_SECOND


def test_8bit_on_a_t4_clears_the_ceiling_but_not_what_an_engine_reaches():
    rows = {r["weights"]: r for r in speed.real_time_rows("T4")}
    eight = rows["8-bit"]
    assert eight["ceiling tokens/s"] > TOKENS_PER_SECOND  # the roofline alone would say "real time"
    assert eight["ceiling tokens/s"] * max(speed.EFFICIENCY_BAND) < TOKENS_PER_SECOND
    assert eight["real time?"] == "no" and rows["16-bit"]["real time?"] == "no"
    assert "8-bit weights: ceiling 95, 57-76" in speed.verdict("T4") and "real time: no" in speed.verdict("T4")


def test_bits_for_real_time_land_exactly_on_real_time():
    for eff in speed.EFFICIENCY_BAND:
        bits = speed.bits_for_real_time("T4", eff)
        assert speed.ceiling("T4", bits) * eff == pytest.approx(TOKENS_PER_SECOND, rel=1e-6)


def test_a_fast_gpu_is_real_time_in_16_bit():
    rows = {r["weights"]: r for r in speed.real_time_rows("A100-40GB")}
    assert rows["16-bit"]["real time?"] == "yes"
    assert "bits per weight" not in speed.verdict("A100-40GB")


def test_the_cited_orpheus_measurement_sits_in_the_quoted_efficiency_band():
    shares = {r["what"]: r["share of the roofline"] for r in speed.efficiency_rows()}
    orpheus_a10g = next(v for k, v in shares.items() if k.startswith("Orpheus"))
    lo, hi = speed.EFFICIENCY_BAND
    assert lo <= orpheus_a10g <= hi
    assert speed.gpt_fast_efficiency(16) > speed.gpt_fast_efficiency(8) > speed.gpt_fast_efficiency(4)
    with pytest.raises(ValueError, match="16-, 8- and 4-bit"):
        speed.gpt_fast_efficiency(2)


def test_batching_shares_the_weights_but_no_request_gets_faster():
    rows = [r for r in speed.speed_ceiling_rows("T4") if r["weights"] == "16-bit"]
    totals = [r["tokens/s total"] for r in rows]
    per = [r["tokens/s per request"] for r in rows]
    assert totals == sorted(totals) and per == sorted(per, reverse=True)


def test_the_plot_names_the_gpu_and_the_device_measured_on():
    fig = speed.plot_speed_ceiling(speed.speed_ceiling_rows("L4"), 40.0, gpu_label="NVIDIA L4", measured_on="NVIDIA L4")
    ax = fig.axes[0]
    assert "NVIDIA L4" in ax.get_title()
    assert any("measured on NVIDIA L4" in t.get_text() for t in ax.get_legend().get_texts())
