"""MetaVoice-1B memory counted from its architecture (colab_tts.lessons.metavoice)."""

import pytest
import torch

from colab_tts.cited import cited
from colab_tts.hardware import GPUS
from colab_tts.lessons import metavoice as mv


def test_first_stage_count_agrees_with_the_readme_figure():
    readme = cited("metavoice.first_stage_params_readme").value
    assert abs(mv.first_stage_params()["total"] - readme) / readme < 0.05


def test_speaker_encoder_count_matches_torch_modules():
    lstm, linear = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
    assert mv.speaker_encoder_params() == sum(p.numel() for m in (lstm, linear) for p in m.parameters())


def test_swiglu_hidden_rounds_up_to_256():
    assert mv.swiglu_hidden(2048) == 5632  # int(2 * 8192 / 3) = 5461 -> next multiple of 256
    assert mv.swiglu_hidden(768) % 256 == 0 and mv.swiglu_hidden(768) >= int(2 * 4 * 768 / 3)


def test_quantisation_shrinks_weights_but_int4_skips_the_2562_way_head():
    fp16, int8, int4 = (mv.first_stage_weight_bytes(m) for m in (None, "int8", "int4"))
    assert int4 < int8 < fp16 < 2.2 * int8
    head = 2048 * 2562
    padded = dict(mv.FIRST_STAGE, vocab_size=2568)  # a multiple of 8: the head gets quantised too
    grown = 2048 * 6 * 2  # six more rows of embedding, fp16
    saved_on_head = (mv.first_stage_weight_bytes("int4", padded) - grown) - int4
    assert saved_on_head < 0 and abs(saved_on_head) > head  # 2 bytes -> ~0.56 bytes per head weight


def test_kv_cache_is_batch_2_over_the_whole_block():
    assert mv.kv_cache_bytes() == 2 * 24 * 2 * 2048 * 2048 * 2
    assert mv.kv_cache_bytes(batch=1) * 2 == mv.kv_cache_bytes()


def test_t4_table_uses_float16_and_fits_and_int4_is_refused_there():
    rows = mv.stage_table("T4")
    assert rows[0]["dtype"] == "float16" and rows[-1]["stage"] == "total counted"
    assert rows[-1]["gib"] == pytest.approx(sum(r["gib"] for r in rows[:-1]))
    assert rows[-1]["gib"] < GPUS["T4"].memory_gib
    with pytest.raises(ValueError, match="int4 is not available"):
        mv.stage_table("T4", "int4")
    assert mv.stage_table("A100-40GB")[0]["dtype"] == "bfloat16"
    assert mv.stage_table("L4", "int4")[-1]["gib"] < mv.stage_table("L4")[-1]["gib"]


def test_fit_rows_cover_the_catalog_and_mark_int4_where_it_cannot_run():
    rows = {r["gpu"]: r for r in mv.fit_rows("int4")}
    assert set(rows) == set(GPUS)
    assert rows["T4"]["counted_gib"] is None and rows["RTX-4090"]["counted_gib"] is not None


def test_bad_quantisation_mode_names_the_choices():
    with pytest.raises(ValueError, match="'int8' or 'int4'"):
        mv.first_stage_weight_bytes("fp8")


def test_verdict_is_the_one_status_and_names_what_the_count_leaves_out():
    from colab_tts import systems

    line = mv.verdict()
    assert line.startswith(f"'Needs ~20 GB, at least a 24 GB card': {mv.CLAIM_STATUS}")
    assert "issues/30" in line and "activations" in line and "12 GB" in line and "refuted" not in line
    # notebook 02 shows both: the fit table's note and this verdict must give the same status
    note = next(r["note"] for r in systems.fit_table(30, "float16", gpus=["T4"]) if "MetaVoice" in r["system"])
    assert mv.CLAIM_STATUS in note and "refuted" not in note
