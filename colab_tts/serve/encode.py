"""Float32 chunks at 24 kHz -> the bytes of each response_format, chunk by chunk as they are decoded.

pcm and wav are written here (wav with the size fields of a stream of unknown length). flac, mp3 and opus are
written by libsndfile (soundfile) into a file-like :class:`_Sink`; whatever it has appended since the last chunk
goes out with the chunk. libsndfile seeks back at close to fill in what only the end knows; bytes already sent
cannot change, so each container must be valid with what it wrote first (libsndfile 1.2.2, src/flac.c,
src/mpeg_l3_encode.c, src/ogg_opus.c at tag 1.2.2, commit 2bb834e1920c55325309d374e70bf1583d8f8321):

- flac: the close rewrites STREAMINFO's frame sizes, total samples and MD5. What was sent holds zeros there,
  which FLAC defines as "unknown" (RFC 9639's STREAMINFO block, https://www.rfc-editor.org/rfc/rfc9639):
  a valid stream, as any encoder that cannot seek back writes it.
  Decoders that read it as a stream (ffmpeg, browsers, libFLAC) play all of it; python-soundfile's ``sf.read``
  cannot (it sizes its array by the unknown length and seeks to the end after the last read), so a soundfile
  user asks for wav, or reads the samples with libsndfile's ``sf_readf_*`` until it returns 0.
- mp3: LAME opens with a placeholder frame (a frame header and zeros) that the close overwrites with the
  Xing/Info frame (frame count, encoder delay and padding). The placeholder is not sent: what goes out is what
  libsndfile writes to a pipe, where it leaves the Info frame out. Without it a decoder also plays the encoder's
  delay and padding (a little over 1,152 samples more than were sent in), and the stream is at a constant
  bitrate (:data:`SNDFILE_OPTIONS`) so that its size alone gives its length.
- opus: Ogg pages are only appended, nothing is rewritten; pages are flushed every :data:`OGG_PAGE_MS`
  instead of libsndfile's default second, so audio leaves as it is decoded.
"""

from __future__ import annotations

import struct

import numpy as np

from ..snac_decode import SAMPLE_RATE
from .schema import sndfile_format

STREAMING_SIZE = 0xFFFFFFFF  # a WAV header's size fields when the length is not known yet (as OpenAI streams wav)
OGG_PAGE_MS = 100.0  # libsndfile's Ogg Opus page length (its default is 1,000 ms; it allows 50 to 1,600)
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302  # sndfile.h, libsndfile 1.2.0 and later
# mp3 at a constant bitrate (80 kbps for 24 kHz mono at this level): without the Info frame a decoder that sizes
# an mp3 by its bytes (libsndfile's, mpg123's estimate) is right only at a constant rate; LAME's default VBR
# stream of 2 s read back through soundfile as 0.24 s.
SNDFILE_OPTIONS = {"MP3": {"compression_level": 0.5, "bitrate_mode": "CONSTANT"}}


def pcm16(samples: np.ndarray) -> bytes:
    """Little-endian signed 16-bit, mono: OpenAI's ``pcm`` (24 kHz)."""
    return np.rint(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", STREAMING_SIZE, b"WAVE", b"fmt ", 16, 1, 1, sample_rate,
                       sample_rate * 2, 2, 16, b"data", STREAMING_SIZE)


class _Sink:
    """A seekable file in memory that libsndfile writes into; ``take()`` returns what was appended since the
    last ``take()``. Writes over bytes already taken are kept in ``late`` (they can no longer be sent)."""

    def __init__(self):
        self.data = bytearray()
        self.pos = 0
        self.sent = 0
        self.late: list[tuple[int, bytes]] = []

    def write(self, data) -> int:
        data = bytes(data)
        if self.pos < self.sent:
            self.late.append((self.pos, data))
        self.data[self.pos: self.pos + len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else len(self.data) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:  # libsndfile may read back what it wrote (FLAC's metadata)
        end = len(self.data) if size < 0 else min(len(self.data), self.pos + size)
        out, self.pos = bytes(self.data[self.pos: end]), max(self.pos, end)
        return out

    def take(self) -> bytes:
        out = bytes(self.data[self.sent:])
        self.sent = len(self.data)
        return out


_MP3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # Layer III, MPEG-1
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}  # MPEG-2 and 2.5
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


def mp3_placeholder_size(data: bytes) -> int | None:
    """The size of LAME's Xing/Info placeholder at the start of ``data`` (a Layer III frame header followed by
    zeros only), 0 when ``data`` does not start with one, None while too few bytes are there to tell."""
    if len(data) < 4:
        return None
    if data[0] != 0xFF or data[1] & 0xE6 != 0xE2:  # frame sync, Layer III
        return 0
    version, kbps_index, rate_index = (data[1] >> 3) & 3, data[2] >> 4, (data[2] >> 2) & 3
    if version == 1 or kbps_index in (0, 15) or rate_index == 3:
        return 0
    kbps, rate = _MP3_KBPS[1 if version == 3 else 2][kbps_index], _MP3_RATES[version][rate_index]
    size = (144 if version == 3 else 72) * kbps * 1000 // rate + ((data[2] >> 1) & 1)
    if len(data) < size:
        return None
    return 0 if any(data[4:size]) else size


class Encoder:
    """``feed(samples) -> bytes`` per decoded chunk, ``finish() -> bytes`` at the end, ``close()`` on every path
    (it lets go of libsndfile's encoder when a stream ends early)."""

    def __init__(self, response_format: str):
        self.format = response_format
        self._header = response_format == "wav"
        self._file = self._sink = None
        self._start_known = response_format != "mp3"  # mp3: not until the placeholder is seen (or not)

    def _open(self):
        import soundfile

        container, subtype = sndfile_format(self.format)
        self._sink = _Sink()
        self._file = soundfile.SoundFile(self._sink, "w", SAMPLE_RATE, 1, subtype, format=container,
                                         **SNDFILE_OPTIONS.get(container, {}))
        if container == "OGG":
            _set_ogg_page_ms(self._file, OGG_PAGE_MS)

    def feed(self, samples: np.ndarray) -> bytes:
        if self.format in ("pcm", "wav"):
            head, self._header = (wav_header() if self._header else b""), False
            return head + pcm16(samples)
        if not len(samples):
            return b""
        if self._file is None:
            self._open()
        self._file.write(np.clip(samples, -1, 1).astype(np.float32, copy=False))
        return self._take()

    def _take(self, last: bool = False) -> bytes:
        if not self._start_known:  # the placeholder is never sent: the close overwrites it (the module's note)
            size = mp3_placeholder_size(bytes(self._sink.data))
            if size is None and not last:
                return b""
            self._sink.sent, self._start_known = size or 0, True
        return self._sink.take()

    def finish(self) -> bytes:
        if self.format in ("pcm", "wav"):
            return wav_header() if self._header else b""
        head = b""
        if self._file is None:  # libsndfile writes no bytes for 0 samples of flac or mp3: not a file a player opens
            head = self.feed(np.zeros(1, dtype=np.float32))
        self._file.close()
        return head + self._take(last=True)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def _set_ogg_page_ms(sound_file, ms: float) -> None:
    """libsndfile's SFC_SET_OGG_PAGE_LATENCY_MS, which soundfile does not wrap; where it is missing pages
    come every second (libsndfile's default)."""
    try:
        from soundfile import _ffi, _snd

        value = _ffi.new("double*", ms)
        _snd.sf_command(sound_file._file, _SFC_SET_OGG_PAGE_LATENCY_MS, value, _ffi.sizeof("double"))
    except (ImportError, AttributeError):
        pass
