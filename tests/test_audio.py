"""Speech: save (atomically), play, plot, timings, concatenation with silence."""

import numpy as np
import pytest
import soundfile as sf

from colab_tts.audio import Speech, Timings


def tone(seconds=0.5, rate=24000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_duration_rate_and_timings():
    s = Speech(tone(0.5), 24000, num_tokens=41, timings=Timings(generate_s=1.0, decode_s=0.25, first_token_s=0.1))
    assert s.duration == pytest.approx(0.5)
    assert s.tokens_per_s == pytest.approx(41.0)
    assert s.rtf == pytest.approx(1.25 / 0.5)
    row = s.summary()
    assert row["first token s"] == 0.1 and row["RTF"] == pytest.approx(2.5)
    assert Speech(np.zeros(0), 24000).rtf is None


def test_save_round_trips_and_leaves_no_temporary_file(tmp_path):
    s = Speech(tone(), 24000)
    path = s.save(tmp_path / "out" / "speech.wav")
    data, rate = sf.read(path, dtype="float32")
    assert rate == 24000 and len(data) == len(s.samples)
    assert np.abs(data - s.samples).max() < 1e-4  # 16-bit PCM
    assert sorted(p.name for p in path.parent.iterdir()) == ["speech.wav"]


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = Speech(tone(0.1), 24000).save(tmp_path / "a.wav")
    before = path.read_bytes()

    def broken(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"RIFF half")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        Speech(tone(0.3), 24000).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_concat_puts_silence_between_parts():
    a, b = Speech(tone(0.25), 24000, 10, Timings(1.0, 0.5, 0.2)), Speech(tone(0.5), 24000, 20, Timings(2.0, 0.5, 0.3))
    joined = Speech.concat([a, b], silence_ms=200)
    gap = int(0.2 * 24000)
    assert len(joined.samples) == len(a.samples) + gap + len(b.samples)
    assert not joined.samples[len(a.samples): len(a.samples) + gap].any()
    np.testing.assert_array_equal(joined.samples[-len(b.samples):], b.samples)
    assert joined.num_tokens == 30 and joined.timings.generate_s == 3.0 and joined.timings.first_token_s == 0.2
    with pytest.raises(ValueError, match="sample rate"):
        Speech.concat([a, Speech(tone(), 16000)])
    with pytest.raises(TypeError, match="Speech"):
        Speech.concat([])


def test_bad_input_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        Speech(np.zeros((2, 10)), 24000)
    with pytest.raises(ValueError, match="sample_rate"):
        Speech(np.zeros(10), 0)
    with pytest.raises(ValueError, match="suffix"):
        Speech(tone(), 24000).save(tmp_path / "noext")


def test_play_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    s = Speech(tone(), 24000)
    assert "audio" in s.play()._repr_html_().lower()
    fig = s.plot()
    assert len(fig.axes) == 2
