import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colab_tts.text import count_tokens, join_audio, split_text

ZH = "今天天气很好，我们去公园散步吧。你想一起来吗？当然！不过，我要先把作业写完、再吃午饭；然后我们出发……"
EN = ("The quick brown fox jumps over the lazy dog. It costs 3.14 dollars, or 1,000 cents! "
      "Does it? Yes; it does. Then, finally, we stop.")


def _assert_slices(text, chunks):
    """Each chunk is the next slice of text, and only whitespace lies between chunks."""
    pos = 0
    for chunk in chunks:
        assert chunk and chunk == chunk.strip()
        i = text.find(chunk, pos)
        assert i >= 0 and text[pos:i].strip() == "", (text[pos:i], chunk)
        pos = i + len(chunk)
    assert text[pos:].strip() == ""


def test_count_tokens():
    assert count_tokens("你好，世界") == 5
    assert count_tokens("Hello, world 42!") == 5
    assert count_tokens("  ") == 0


def test_short_text_is_one_chunk():
    assert split_text("  Hello there.  ") == ["Hello there."]
    assert split_text("") == [] and split_text(" \n ") == []


def test_chinese_cuts_at_sentence_punctuation_first():
    chunks = split_text(ZH, max_tokens=20)
    assert chunks[0] == "今天天气很好，我们去公园散步吧。"
    assert all(c[-1] in "。！？；…" for c in chunks)
    assert "".join(chunks) == ZH
    assert all(count_tokens(c) <= 20 for c in chunks)


def test_packs_consecutive_sentences_while_they_fit():
    chunks = split_text(ZH, max_tokens=30)
    assert chunks[0] == "今天天气很好，我们去公园散步吧。你想一起来吗？当然！"


def test_english_keeps_numbers_whole_and_falls_back_to_commas():
    chunks = split_text(EN, max_tokens=8)
    _assert_slices(EN, chunks)
    assert any("3.14" in c for c in chunks) and any("1,000" in c for c in chunks)
    assert "It costs 3.14 dollars," in chunks  # too long as a sentence: cut at its comma
    assert all(count_tokens(c) <= 8 for c in chunks)


def test_hard_cut_at_spaces_then_characters():
    words = " ".join(f"w{i}" for i in range(30))
    chunks = split_text(words, max_tokens=7)
    assert all(count_tokens(c) <= 7 for c in chunks) and len(chunks) == 5
    assert " ".join(chunks) == words
    zh = "一" * 25
    assert split_text(zh, max_tokens=10) == ["一" * 10, "一" * 10, "一" * 5]


def test_custom_counter():
    chunks = split_text("abcdefghij", max_tokens=4, count=len)
    assert chunks == ["abcd", "efgh", "ij"]


def test_bad_input_names_the_fix():
    with pytest.raises(TypeError, match="decode"):
        split_text(b"bytes")
    with pytest.raises(ValueError, match="max_tokens"):
        split_text("x", max_tokens=0)
    with pytest.raises(TypeError, match="count"):
        split_text("x", count=3)


_ALPHABET = st.sampled_from(list("ab 一二\n。！？；….!?;，、,\"”1") + ["word", "  "])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_ALPHABET, max_size=60), limit=st.integers(1, 12))
def test_property_nothing_lost_or_reordered(parts, limit):
    text = "".join(parts)
    chunks = split_text(text, max_tokens=limit)
    _assert_slices(text, chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())
    assert all(count_tokens(c) <= limit or len(c) == 1 for c in chunks)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200), limit=st.integers(1, 40))
def test_property_any_unicode(text, limit):
    chunks = split_text(text, max_tokens=limit)
    _assert_slices(text, chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())


def test_join_audio_silence_and_types():
    sr = 1000
    a, b = np.ones(100, dtype=np.float32), torch.full((50,), 2.0)
    out = join_audio([a, b], sr, silence_ms=200)
    assert out.shape == (350,) and out.dtype == np.float32
    assert (out[:100] == 1).all() and (out[100:300] == 0).all() and (out[300:] == 2).all()
    assert join_audio([], sr).shape == (0,)
    assert join_audio([a], sr).tolist() == a.tolist()


def test_join_audio_crossfade_overlaps():
    sr = 1000
    a, b = np.ones(100), np.zeros(100)
    out = join_audio([a, b], sr, silence_ms=0, crossfade_ms=20)
    assert out.shape == (180,)
    ramp = out[80:100]
    assert ramp[0] == pytest.approx(1) and ramp[-1] == pytest.approx(0) and (np.diff(ramp) < 0).all()
    faded = join_audio([a, a], sr, silence_ms=10, crossfade_ms=5)
    assert faded.shape == (210,) and faded[99] == 0 and faded[110] == 0 and faded[105] == 0


def test_join_audio_channels_and_errors():
    out = join_audio([np.ones((2, 10)), np.ones((2, 5))], 100, silence_ms=100)
    assert out.shape == (2, 25)
    with pytest.raises(ValueError, match="channels"):
        join_audio([np.ones((2, 10)), np.ones(5)], 100)
    with pytest.raises(TypeError, match="sample_rate"):
        join_audio([np.ones(3)], 22050.5)
    with pytest.raises(ValueError, match="silence_ms"):
        join_audio([np.ones(3)], 100, silence_ms=-1)
    with pytest.raises(TypeError, match="list of audio"):
        join_audio(np.ones(3), 100)
