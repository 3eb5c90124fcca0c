"""The official Orpheus streaming decoder, re-implemented for the benchmark and the tests.

Same algorithm and quirks as canopyai/Orpheus-TTS orpheus_tts_pypi/orpheus_tts/decoder.py @835ac7c
(``turn_token_into_id``, ``convert_to_audio``, ``tokens_decoder``), written here: every 7 tokens from
the 28th on, decode the last 28 and keep samples 2048:4096. ``benchmarks/snac_decode.py`` times
:mod:`colab_tts.snac_decode` against it; ``tests/test_orpheus_decode.py`` checks the code mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .snac_decode import AUDIO_TOKEN_OFFSET, CODES_PER_SLOT, _param


def official_code(token_id: int, count: int) -> int:
    """Upstream ``turn_token_into_id`` on an id: id - 128266 - 4096 * (count % 7)."""
    return int(token_id) - AUDIO_TOKEN_OFFSET - (count % 7) * CODES_PER_SLOT


def _official_convert_to_audio(multiframe, snac):
    import torch

    device = _param(snac).device
    if len(multiframe) < 7:
        return None
    codes_0 = torch.tensor([], device=device, dtype=torch.int32)
    codes_1 = torch.tensor([], device=device, dtype=torch.int32)
    codes_2 = torch.tensor([], device=device, dtype=torch.int32)
    num_frames = len(multiframe) // 7
    frame = multiframe[: num_frames * 7]
    for j in range(num_frames):  # per-token tensors and torch.cat, as the original does
        i = 7 * j
        t = lambda k: torch.tensor([frame[k]], device=device, dtype=torch.int32)  # noqa: E731
        codes_0 = torch.cat([codes_0, t(i)])
        codes_1 = torch.cat([codes_1, t(i + 1), t(i + 4)])
        codes_2 = torch.cat([codes_2, t(i + 2), t(i + 3), t(i + 5), t(i + 6)])
    codes = [codes_0.unsqueeze(0), codes_1.unsqueeze(0), codes_2.unsqueeze(0)]
    if any(torch.any(c < 0) or torch.any(c > 4096) for c in codes):
        return None
    with torch.inference_mode():
        audio_hat = snac.decode(codes)
    audio_np = audio_hat[:, :, 2048:4096].detach().cpu().numpy()
    return (audio_np * 32767).astype(np.int16).tobytes()


def official_stream(token_ids: Iterable[int], snac) -> Iterator[bytes]:
    """The official streaming decoder: every 7 tokens (from the 28th on), decode the last 28 and keep
    samples 2048:4096 as int16 bytes. Quirks kept: a code of 0 is skipped (``if token > 0``), the
    first frame and the last two are never emitted."""
    buffer: list[int] = []
    count = 0
    for token_id in token_ids:
        if token_id < AUDIO_TOKEN_OFFSET:
            continue
        token = official_code(token_id, count)
        if token > 0:
            buffer.append(token)
            count += 1
            if count % 7 == 0 and count > 27:
                audio = _official_convert_to_audio(buffer[-28:], snac)
                if audio is not None:
                    yield audio


def official_decode(token_ids, snac) -> np.ndarray:
    """All of :func:`official_stream` joined, as float32 (int16 / 32767)."""
    pcm = b"".join(official_stream(token_ids, snac))
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32767
