"""Float32 chunks at 24 kHz -> the bytes of each response_format, chunk by chunk where the format allows."""

from __future__ import annotations

import io
import struct

import numpy as np

from ..snac_decode import SAMPLE_RATE
from .schema import sndfile_format

STREAMING_SIZE = 0xFFFFFFFF  # a WAV header's size fields when the length is not known yet (as OpenAI streams wav)


def pcm16(samples: np.ndarray) -> bytes:
    """Little-endian signed 16-bit, mono: OpenAI's ``pcm`` (24 kHz)."""
    return np.rint(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", STREAMING_SIZE, b"WAVE", b"fmt ", 16, 1, 1, sample_rate,
                       sample_rate * 2, 2, 16, b"data", STREAMING_SIZE)


class Encoder:
    """``feed(samples) -> bytes`` per decoded chunk, ``finish() -> bytes`` at the end. pcm and wav stream as
    decoded; flac, mp3 and opus are written by libsndfile once the audio is complete (their containers record
    lengths that a stream does not know yet)."""

    def __init__(self, response_format: str):
        self.format = response_format
        self._header = response_format == "wav"
        self._whole: list[np.ndarray] = []

    def feed(self, samples: np.ndarray) -> bytes:
        if self.format in ("pcm", "wav"):
            head, self._header = (wav_header() if self._header else b""), False
            return head + pcm16(samples)
        self._whole.append(samples)
        return b""

    def finish(self) -> bytes:
        if self.format in ("pcm", "wav"):
            return wav_header() if self._header else b""
        import soundfile

        container, subtype = sndfile_format(self.format)
        audio = np.concatenate(self._whole) if self._whole else np.zeros(0, dtype=np.float32)
        if not len(audio):  # libsndfile writes no bytes at all for 0 samples of flac or mp3: not a file a player opens
            audio = np.zeros(1, dtype=np.float32)
        buf = io.BytesIO()
        soundfile.write(buf, np.clip(audio, -1, 1), SAMPLE_RATE, format=container, subtype=subtype)
        return buf.getvalue()
