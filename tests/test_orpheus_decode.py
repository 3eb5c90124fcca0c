"""Orpheus tokens <-> SNAC codes, against the official formula; chunked and streamed SNAC decoding."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from colab_tts import snac_decode as sd
from colab_tts import snac_official
from colab_tts.cited import cited
from colab_tts.orpheus import audio_tokens_to_codes, codes_to_audio_tokens


def official_layers(token_ids):
    """The official decoder's mapping, token by token (canopyai/Orpheus-TTS
    orpheus_tts_pypi/orpheus_tts/decoder.py @835ac7c: turn_token_into_id + convert_to_audio)."""
    codes, count = [], 0
    for t in token_ids:
        if t < sd.AUDIO_TOKEN_OFFSET:  # text / special ids never become codes
            continue
        codes.append(snac_official.official_code(t, count))
        count += 1
    frames = len(codes) // 7
    c0, c1, c2 = [], [], []
    for j in range(frames):
        f = codes[7 * j: 7 * j + 7]
        c0 += [f[0]]
        c1 += [f[1], f[4]]
        c2 += [f[2], f[3], f[5], f[6]]
    return c0, c1, c2


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4095), min_size=7, max_size=7), max_size=20),
       st.lists(st.integers(0, 128265), max_size=10), st.integers(0, 6), st.randoms(use_true_random=False))
def test_code_mapping_equals_the_official_formula(frames, junk, partial, rnd):
    ids = [sd.AUDIO_TOKEN_OFFSET + c + 4096 * i for f in frames for i, c in enumerate(f)]
    ids += ids[:partial] if len(ids) >= partial else []  # a trailing partial frame
    for j in junk:  # text and special tokens scattered through the stream
        ids.insert(rnd.randint(0, len(ids)), j)
    got = audio_tokens_to_codes(ids)
    want = official_layers(ids)
    for layer, expected in zip(got, want):
        assert layer.shape == (1, len(expected))
        assert layer.reshape(-1).tolist() == expected
    assert got.dropped_tokens == (partial if frames else 0)
    assert got.invalid_frames == 0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 30), st.integers(0, 2**32 - 1))
def test_codes_to_tokens_is_the_inverse(frames, seed):
    rng = np.random.default_rng(seed)
    codes = [torch.tensor(rng.integers(0, 4096, (1, frames * k))) for k in (1, 2, 4)]
    ids = codes_to_audio_tokens(codes)
    assert len(ids) == 7 * frames
    back = audio_tokens_to_codes(ids)
    assert all(torch.equal(a, b) for a, b in zip(back, codes))


def test_tokens_in_the_wrong_slot_are_counted_not_fatal():
    good = codes_to_audio_tokens([torch.tensor([[5, 6]]), torch.tensor([[1, 2, 3, 4]]), torch.tensor([[7] * 8])])
    bad = list(good)
    bad[9] = sd.AUDIO_TOKEN_OFFSET + 3  # frame 1, slot 2 holds a slot-0 token: code -8189
    with pytest.warns(RuntimeWarning, match="1 of 2 audio frames"):
        codes = audio_tokens_to_codes(bad + [156_939])  # the top vocabulary id: code 4097 in slot 0
    assert codes.invalid_frames == 1
    assert codes.num_frames == 1 and codes[0].tolist() == [[5]]
    assert codes.dropped_tokens == 1


def test_bad_inputs_name_the_fix():
    with pytest.raises(TypeError, match="not text"):
        audio_tokens_to_codes("128266 128267")
    with pytest.raises(TypeError, match="integers"):
        audio_tokens_to_codes([1.5, 2.5])
    with pytest.raises(ValueError, match="F, 2F and 4F"):
        codes_to_audio_tokens([torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 8)])
    with pytest.raises(ValueError, match="0..4095"):
        codes_to_audio_tokens([torch.tensor([[4096]]), torch.zeros(1, 2), torch.zeros(1, 4)])
    assert audio_tokens_to_codes([]).num_frames == 0


# --- decoding ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quiet_snac():
    return sd.build_snac(pretrained=False, noise=False)


def random_ids(frames, seed=0):
    rng = np.random.default_rng(seed)
    return codes_to_audio_tokens([torch.tensor(rng.integers(0, 4096, (1, frames * k))) for k in (1, 2, 4)])


def test_random_snac_is_the_24khz_architecture_and_folding_keeps_its_function(quiet_snac):
    assert quiet_snac.sampling_rate == sd.SAMPLE_RATE
    assert quiet_snac.vq_strides == [4, 2, 1] and quiet_snac.decoder_rates == [8, 8, 4, 2]
    raw = sd.build_snac(pretrained=False, noise=False, fold=False)
    params = sum(p.numel() for n, p in raw.named_parameters() if not n.endswith("original0"))  # g of g*v/|v|
    published = cited("snac.parameters_24khz").value  # 19.8 M, from SNAC's README
    assert abs(params / published - 1) < 0.02  # less 0.35 M of NoiseBlocks here
    assert not any("parametrizations" in n for n, _ in quiet_snac.named_parameters())
    assert sum(p.numel() for p in quiet_snac.parameters()) == params  # folded weights stay parameters (.to moves them)
    ids = random_ids(3)
    np.testing.assert_allclose(sd.decode_one_call(ids, quiet_snac), sd.decode_one_call(ids, raw), atol=1e-5)


def test_chunked_decode_matches_one_call(quiet_snac):
    ids = random_ids(7)
    ref = sd.decode_one_call(ids, quiet_snac)
    out = sd.decode_audio(ids, quiet_snac, chunk_frames=3, context_frames=3)
    assert out.dtype == np.float32 and out.shape == ref.shape == (7 * 2048,)
    assert np.abs(out - ref).max() < 1e-5  # the tolerance decode_audio promises at 3 frames of context
    no_context = sd.decode_audio(ids, quiet_snac, chunk_frames=3, context_frames=0)
    assert np.abs(no_context - ref).max() > 1e-3  # context is what makes it match


def test_one_chunk_with_noise_is_the_one_call_decode_for_the_same_seed():
    noisy = sd.build_snac(pretrained=False)
    ids = random_ids(5)
    torch.manual_seed(3)
    ref = sd.decode_one_call(ids, noisy)
    torch.manual_seed(3)
    out = sd.decode_audio(ids, noisy, chunk_frames=8)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    torch.manual_seed(4)
    assert np.abs(sd.decode_audio(ids, noisy, chunk_frames=8) - ref).max() > 1e-4  # the noise is real


def test_non_audio_ids_are_skipped_when_decoding(quiet_snac):
    ids = random_ids(3)
    mixed = [128259, 128000, 42] + ids[:10] + [128009] + ids[10:] + [128258, 5]
    np.testing.assert_array_equal(sd.decode_audio(mixed, quiet_snac), sd.decode_audio(ids, quiet_snac))


class Counting:
    """An iterator over ids that remembers how many were consumed."""

    def __init__(self, ids):
        self.ids, self.consumed = ids, 0

    def __iter__(self):
        for t in self.ids:
            self.consumed += 1
            yield t


def test_stream_starts_within_four_frames_and_matches_decode_audio(quiet_snac):
    ids = random_ids(6, seed=1)
    source = Counting(ids)
    chunks, consumed_at = [], []
    for chunk in sd.stream_audio(source, quiet_snac):
        chunks.append(chunk)
        consumed_at.append(source.consumed)
    assert consumed_at[0] <= 4 * 7  # first audio after at most 4 frames
    assert len(chunks[0]) > 0 and all(len(c) % 2048 == 0 for c in chunks)
    assert len(chunks) >= 3  # per frame after the first
    streamed = np.concatenate(chunks)
    whole = sd.decode_audio(ids, quiet_snac)
    assert streamed.shape == whole.shape
    diff = np.abs(streamed - whole).max()
    assert 0 < diff < 0.05 * np.abs(whole).max()  # 1 frame of lookahead: close, not equal
    exact = np.concatenate(list(sd.stream_audio(ids, quiet_snac, lookahead_frames=3, context_frames=3)))
    assert np.abs(exact - whole).max() < 1e-5  # full receptive field: equal to float rounding


def test_stream_handles_short_and_empty_input(quiet_snac):
    assert list(sd.stream_audio([], quiet_snac)) == []
    two = random_ids(2)
    chunks = list(sd.stream_audio(two + [128258], quiet_snac))
    assert sum(map(len, chunks)) == 2 * 2048
    with pytest.raises(ValueError, match="at most 4"):
        list(sd.stream_audio(two, quiet_snac, first_frames=5))


def test_official_decoder_reimplementation_keeps_one_frame_per_window(quiet_snac):
    ids = random_ids(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = snac_official.official_decode(ids, quiet_snac)
    assert len(out) == (6 - 3) * 2048  # windows end at frames 4, 5, 6; the first and last two are never emitted
    window = sd.decode_one_call(ids[:28], quiet_snac)[2048:4096]
    np.testing.assert_allclose(out[:2048], window, atol=1 / 32767)  # int16 rounding
