"""SNAC for many streams at once: each engine step, the frames every active stream can emit are decoded
together, one decoder call per window length (in the steady state one call for all streams).

Each stream follows :func:`colab_tts.snac_decode.stream_audio` exactly (the first chunk after
``first_frames`` frames, then one frame at a time with ``lookahead_frames`` of lookahead and
``context_frames`` of context, ``group_frames`` at a time, the rest flushed at the end), so a stream's audio is the audio it would
get alone; only the decoder calls are shared. Streams start and end at different steps, so their
windows are grouped by length and each group is one batched call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..snac_decode import AUDIO_TOKEN_OFFSET, HOP_LENGTH, SAMPLES_PER_FRAME, TOKENS_PER_FRAME, _param, tokens_to_frames

LATENT_PER_FRAME = SAMPLES_PER_FRAME // HOP_LENGTH


@dataclass
class FrameStream:
    """One request's audio frames and how many have been emitted (stream_audio's state)."""

    first_frames: int = 4
    group_frames: int = 1
    lookahead_frames: int = 1
    context_frames: int = 2
    pending: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    emitted: int = 0
    invalid_frames: int = 0
    finished: bool = False

    @property
    def lookahead(self) -> int:
        return min(self.lookahead_frames, self.first_frames - 1)

    def add_tokens(self, tokens) -> None:
        for token in tokens:
            token = int(token)
            if token < AUDIO_TOKEN_OFFSET:
                continue
            self.pending.append(token)
            if len(self.pending) == TOKENS_PER_FRAME:
                f, invalid, _ = tokens_to_frames(self.pending, warn=False)
                self.invalid_frames += invalid
                self.frames.extend(f)
                self.pending.clear()

    def window(self):
        """(lo, start, stop, hi) of the frames to decode now, or None. At most one window per step: with one
        token per step a stream completes at most one frame per step, as stream_audio sees them.
        ``group_frames``: after the first chunk, emit every that many frames (fewer, longer decoder calls:
        context + group + lookahead frames decoded per group instead of per frame)."""
        n = len(self.frames)
        if self.finished:
            return (max(0, self.emitted - self.context_frames), self.emitted, n, n) if self.emitted < n else None
        ready = n - self.lookahead
        due = self.first_frames - self.lookahead if self.emitted == 0 else self.emitted + self.group_frames
        if n >= self.first_frames and ready >= due:
            return max(0, self.emitted - self.context_frames), self.emitted, ready, n
        return None


class BatchedDecoder:
    """Decode the due windows of many :class:`FrameStream` s with as few SNAC calls as their lengths allow."""

    def __init__(self, snac):
        self.snac = snac
        self.calls = 0  # decoder calls made (the tests and the benchmark count them)
        self.windows = 0  # stream windows decoded

    def step(self, streams: dict) -> dict:
        """{key: FrameStream} -> {key: float32 samples} for every stream with a window due now."""
        import torch

        due = {key: w for key, s in streams.items() if (w := s.window()) is not None}
        if not due:
            return {}
        groups = defaultdict(list)
        for key, (lo, _, _, hi) in due.items():
            groups[hi - lo].append(key)
        p = _param(self.snac)
        out = {}
        with torch.inference_mode():
            for keys in groups.values():
                frames = np.stack([np.stack(streams[k].frames[due[k][0]: due[k][3]]) for k in keys])  # (B, L, 7)
                f = torch.as_tensor(frames, dtype=torch.long, device=p.device)
                codes = [f[:, :, 0], f[:, :, [1, 4]].reshape(len(keys), -1), f[:, :, [2, 3, 5, 6]].reshape(len(keys), -1)]
                y = self.snac.decoder(self.snac.quantizer.from_codes(codes))
                self.calls += 1
                self.windows += len(keys)
                for i, k in enumerate(keys):
                    lo, start, stop, _ = due[k]
                    out[k] = y[i, 0, (start - lo) * SAMPLES_PER_FRAME: (stop - lo) * SAMPLES_PER_FRAME].float().cpu().numpy()
                    streams[k].emitted = stop
        return out
