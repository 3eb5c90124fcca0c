"""Speech: synthesized samples with their sample rate, token count and timings; save, play, plot, join."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import positive
from ._files import atomic_path, output_file


def sound_suffixes() -> set[str]:
    """The suffixes ``Speech.save`` writes (soundfile's formats): .wav, .flac, .ogg, ..."""
    import soundfile as sf

    usable = {"WAV", "FLAC", "OGG", "MP3", "AIFF", "AU", "CAF", "W64", "RF64"}  # RAW etc. need more than a rate
    return {f".{fmt.lower()}" for fmt in sf.available_formats() if fmt in usable}


@dataclass
class Timings:
    """Where the time went, in seconds. ``first_token_s``: request sent -> first generated token."""

    generate_s: float = 0.0
    decode_s: float = 0.0
    first_token_s: float | None = None
    first_audio_s: float | None = None

    @property
    def total_s(self) -> float:
        return self.generate_s + self.decode_s


@dataclass
class Speech:
    """Mono float32 samples in [-1, 1] at ``sample_rate``, and how they were made."""

    samples: np.ndarray
    sample_rate: int
    num_tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    text: str = ""

    def __post_init__(self):
        if hasattr(self.samples, "detach"):
            self.samples = self.samples.detach().float().cpu().numpy()
        samples = np.asarray(self.samples)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.number):
            raise ValueError(f"samples must be a 1-D array of numbers (mono audio), got shape {samples.shape}")
        self.samples = samples.astype(np.float32, copy=False)
        positive(self.sample_rate, "sample_rate", integer=True)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / self.sample_rate

    @property
    def tokens_per_s(self) -> float | None:
        """Generated tokens per second of generation time."""
        t = self.timings.generate_s
        return self.num_tokens / t if t > 0 and self.num_tokens else None

    @property
    def rtf(self) -> float | None:
        """Real-time factor: seconds spent per second of audio (below 1 = faster than real time)."""
        return self.timings.total_s / self.duration if self.duration > 0 and self.timings.total_s > 0 else None

    def summary(self) -> dict:
        t = self.timings
        return {"audio s": self.duration, "tokens": self.num_tokens, "first token s": t.first_token_s,
                "tokens/s": self.tokens_per_s, "generate s": t.generate_s, "decode s": t.decode_s,
                "RTF": self.rtf}

    def save(self, path) -> Path:
        """Write a sound file (format from the suffix, e.g. .wav). Written to a temporary file in the
        same folder and renamed, so an interrupted write never leaves half a file behind."""
        import soundfile as sf

        path = output_file(path, sound_suffixes())
        try:
            with atomic_path(path) as tmp:
                sf.write(tmp, self.samples, self.sample_rate)
        except (OSError, RuntimeError) as err:  # soundfile's errors name the temporary file: name the user's
            from .errors import DiskFullError, is_disk_full

            if is_disk_full(err):
                import shutil

                raise DiskFullError(f"writing {path}", path.parent, None, shutil.disk_usage(path.parent).free,
                                    ()) from None
            raise OSError(f"could not write {path}: {str(err).replace(str(tmp), str(path))}") from None
        return path

    def play(self):
        """An IPython Audio player (shows in a notebook)."""
        from IPython.display import Audio

        return Audio(self.samples, rate=self.sample_rate, normalize=False)

    def _repr_html_(self):
        return self.play()._repr_html_()

    def plot(self, title: str | None = None):
        """Waveform and spectrogram, one above the other; returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        fig, (wave, spec) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
        t = np.arange(len(self.samples)) / self.sample_rate
        wave.plot(t, self.samples, lw=0.4)
        wave.set_ylabel("amplitude")
        if len(self.samples) >= 256:
            spec.specgram(self.samples, NFFT=512, Fs=self.sample_rate, noverlap=384, cmap="magma")
        spec.set_ylabel("Hz")
        spec.set_xlabel("seconds")
        fig.suptitle(title or f"{self.duration:.2f} s at {self.sample_rate} Hz")
        fig.tight_layout()
        return fig

    @classmethod
    def concat(cls, parts, silence_ms: float = 200, crossfade_ms: float = 0) -> Speech:
        """Join several Speech objects (same sample rate) with ``silence_ms`` of silence between them."""
        from .text import join_audio

        parts = list(parts)
        if not parts or not all(isinstance(p, Speech) for p in parts):
            raise TypeError("concat needs a non-empty list of Speech objects")
        rates = {p.sample_rate for p in parts}
        if len(rates) != 1:
            raise ValueError(f"all parts need the same sample rate, got {sorted(rates)}: resample first")
        rate = rates.pop()
        samples = join_audio([p.samples for p in parts], rate, silence_ms=silence_ms, crossfade_ms=crossfade_ms)
        firsts = [p.timings.first_token_s for p in parts if p.timings.first_token_s is not None]
        timings = Timings(sum(p.timings.generate_s for p in parts), sum(p.timings.decode_s for p in parts),
                          firsts[0] if firsts else None, parts[0].timings.first_audio_s)
        return cls(samples, rate, sum(p.num_tokens for p in parts), timings, " ".join(p.text for p in parts))
