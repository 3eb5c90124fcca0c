"""Long text in, speakable chunks out; audio chunks in, one waveform out.

TTS models are trained on utterances of a few sentences and their memory grows with the input, so
long text is synthesised chunk by chunk (IndexTTS-2: ``max_text_tokens_per_segment=120``, segments
joined with 200 ms of silence: ``cited("indextts2.max_text_tokens_per_segment")`` and
``cited("indextts2.interval_silence_ms")``, from index-tts/index-tts indextts/infer_v2.py @ee40fa7).
``split_text`` cuts English and Chinese text the same way: at sentence punctuation first, then at
commas, then a hard cut. Both defaults are IndexTTS-2's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ._checks import positive
from .cited import value

MAX_TOKENS = value("indextts2.max_text_tokens_per_segment")
SILENCE_MS = value("indextts2.interval_silence_ms")

# A cut goes *after* the matched punctuation (and any closing quotes/brackets that follow it).
# ASCII marks count only before whitespace or the end, so "3.14", "1,000" and "e.g.x" stay whole.
_CLOSERS = "\"'”’」』）)\\]》"
_SENTENCE = re.compile(rf"(?:[。！？；…]+|[.!?;]+(?=[{_CLOSERS}]*(?:\s|$)))[{_CLOSERS}]*")
_COMMA = re.compile(rf"(?:[，、]+|,(?=[{_CLOSERS}]*(?:\s|$)))[{_CLOSERS}]*")
_TOKEN = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]"  # one CJK/kana/hangul character
    r"|[^\W_]+"  # a word or number
    r"|[^\w\s]",  # one punctuation mark
    re.UNICODE,
)


def count_tokens(text: str) -> int:
    """Approximate token count: one per CJK character, per word or number, per punctuation mark.

    Close to a BPE tokenizer on Chinese and short English words; pass the model's own counter
    (``lambda s: len(tokenizer.encode(s))``) to ``split_text`` when you have it.
    """
    return len(_TOKEN.findall(text))


def _ends(text: str, start: int, stop: int, pattern: re.Pattern) -> list[int]:
    """Positions in text[start:stop] just after each match of `pattern`, plus `stop`."""
    ends = [m.end() + start for m in pattern.finditer(text[start:stop]) if m.end() + start < stop]
    return ends + [stop]


def split_text(text: str, max_tokens: int = MAX_TOKENS, *, count: Callable[[str], int] | None = None) -> list[str]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens, in order.

    Cuts at sentence punctuation (。！？；… and . ! ? ;) first, packing consecutive sentences
    together while they fit; a sentence that is too long is cut at commas (，、 and ,), and a clause
    that is still too long gets a hard cut (at the last space that fits, else between characters).

    Nothing is lost or reordered: each chunk is a slice of ``text`` with the whitespace at its two
    ends stripped, and only whitespace lies between consecutive chunks, so
    ``"".join(split_text(t))`` equals ``t`` with the whitespace at the cuts (and at the two ends)
    removed. Empty or all-whitespace text gives ``[]``. ``count`` counts tokens (default:
    ``count_tokens``); a single character counting more than ``max_tokens`` becomes its own chunk.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}; decode bytes first (text.decode('utf-8'))")
    positive(max_tokens, "max_tokens", integer=True)
    count = count_tokens if count is None else count
    if not callable(count):
        raise TypeError("count must be a function str -> int, e.g. lambda s: len(tokenizer.encode(s))")
    spans: list[tuple[int, int]] = []
    _split(text, 0, len(text), max_tokens, count, 0, spans)
    chunks = []
    for a, b in spans:
        piece = text[a:b].strip()
        if piece:
            chunks.append(piece)
    return chunks


_LEVELS = (_SENTENCE, _COMMA)


def _split(text, start, stop, limit, count, level, out) -> None:
    if count(text[start:stop]) <= limit:
        out.append((start, stop))
        return
    if level == len(_LEVELS):
        _hard_cut(text, start, stop, limit, count, out)
        return
    # Pack consecutive pieces greedily; a piece that alone is too long goes one level down.
    chunk_start = start
    last_fit = None
    for end in _ends(text, start, stop, _LEVELS[level]):
        if count(text[chunk_start:end]) <= limit:
            last_fit = end
            continue
        if last_fit is not None:
            out.append((chunk_start, last_fit))
            chunk_start = last_fit
            if count(text[chunk_start:end]) <= limit:
                last_fit = end
                continue
        _split(text, chunk_start, end, limit, count, level + 1, out)
        chunk_start, last_fit = end, None
    if last_fit is not None and chunk_start < stop:
        out.append((chunk_start, stop))


def _hard_cut(text, start, stop, limit, count, out) -> None:
    while start < stop:
        if count(text[start:stop]) <= limit:
            out.append((start, stop))
            return
        lo, hi = start + 1, stop  # longest prefix that fits, by bisection (counts grow with length)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        cut = lo
        space = max(text.rfind(" ", start + 1, cut + 1), text.rfind("\n", start + 1, cut + 1))
        if space > start and not text[start:space].isspace():
            cut = space
        out.append((start, cut))
        start = cut


# --- audio ---------------------------------------------------------------------------------------

def join_audio(chunks: Sequence, sample_rate: int, silence_ms: float = SILENCE_MS, crossfade_ms: float = 0):
    """Join audio chunks (1-D arrays or tensors, or (..., samples)) into one float numpy array.

    ``silence_ms`` of silence goes between chunks (IndexTTS-2 uses 200 ms). With ``crossfade_ms``
    and no silence, neighbouring chunks overlap by that much with a linear crossfade (the result is
    shorter by the overlaps); with both, each chunk fades out and the next fades in around the
    silence, which removes clicks without changing the length.
    """
    import numpy as np

    positive(sample_rate, "sample_rate", integer=True)
    positive(silence_ms, "silence_ms", allow_zero=True)
    positive(crossfade_ms, "crossfade_ms", allow_zero=True)
    if isinstance(chunks, (str, bytes)) or not isinstance(chunks, Sequence):
        raise TypeError("chunks must be a list of audio arrays (numpy arrays or torch tensors)")
    arrays = [_as_array(c, i) for i, c in enumerate(chunks)]
    if not arrays:
        return np.zeros(0, dtype=np.float32)
    lead = arrays[0].shape[:-1]
    for i, a in enumerate(arrays):
        if a.shape[:-1] != lead:
            raise ValueError(f"chunk {i} has shape {a.shape}, chunk 0 has {arrays[0].shape}: "
                             "all chunks need the same channels (only the last axis, samples, may differ)")
    dtype = np.result_type(np.float32, *arrays)
    gap = np.zeros(lead + (round(sample_rate * silence_ms / 1000),), dtype=dtype)
    fade = round(sample_rate * crossfade_ms / 1000)
    out = arrays[0].astype(dtype, copy=True)
    for nxt in arrays[1:]:
        nxt = nxt.astype(dtype, copy=True)
        n = min(fade, out.shape[-1], nxt.shape[-1])
        if n and gap.shape[-1]:
            out[..., -n:] *= np.linspace(1, 0, n, dtype=dtype)
            nxt[..., :n] *= np.linspace(0, 1, n, dtype=dtype)
            out = np.concatenate([out, gap, nxt], axis=-1)
        elif n:
            ramp = np.linspace(0, 1, n, dtype=dtype)
            mixed = out[..., -n:] * (1 - ramp) + nxt[..., :n] * ramp
            out = np.concatenate([out[..., :-n], mixed, nxt[..., n:]], axis=-1)
        else:
            out = np.concatenate([out, gap, nxt], axis=-1)
    return out


def _as_array(chunk, i):
    import numpy as np

    if hasattr(chunk, "detach"):  # a torch tensor, on any device, in any float dtype
        chunk = chunk.detach().float().cpu().numpy()
    arr = np.asarray(chunk)
    if arr.ndim == 0 or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"chunk {i} must be an array of samples (1-D, or (..., samples)), got {type(chunk).__name__}"
                        f" with shape {arr.shape}")
    return arr
