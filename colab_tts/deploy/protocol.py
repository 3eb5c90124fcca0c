"""What a worker hands back: ``result.json`` plus audio files in one output folder.

The notebook's kernel never imports upstream code; it reads this folder. Layout::

    out/result.json   {"system", "upstream": {"repo", "commit"}, "device", "ok", "error",
                       "calls": [{"target", "label"?, "seconds", "peak_gib"?, "total_peak_gib"?, "audio"?}],
                       "stages": [{"stage", "seconds", "peak_gib"?, "total_peak_gib"?}], "extra": {...}}
    out/*.wav         16-bit PCM, named in calls[i]["audio"]

Everything here is standard library plus numpy, so it runs in any system's environment
(Python 3.10+).
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

from .._files import atomic_path

RESULT = "result.json"
REQUIRED = ("system", "upstream", "device", "ok", "calls")


def write_wav(path, samples, sample_rate: int) -> dict:
    """Mono float (-1..1) or int16 samples -> a 16-bit wav; returns its description for result.json."""
    import numpy as np

    a = np.asarray(samples)
    if a.ndim > 1:
        a = a.reshape(-1)
    if a.dtype != np.int16:
        a = (np.clip(a.astype(np.float64), -1.0, 1.0) * 32767).astype(np.int16)
    path = Path(path)
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(a.tobytes())
    return {"file": path.name, "sample_rate": int(sample_rate), "seconds": round(len(a) / sample_rate, 3)}


def read_wav(path):
    """A wav written by ``write_wav`` -> (float32 samples in -1..1, sample_rate)."""
    import numpy as np

    with wave.open(str(path), "rb") as w:
        sr, n = w.getframerate(), w.getnframes()
        data = np.frombuffer(w.readframes(n), dtype=np.int16)
    return data.astype(np.float32) / 32767, sr


def describe_wav(path) -> dict:
    """{"file", "sample_rate", "seconds"} of an audio file upstream wrote (any wav subtype soundfile reads)."""
    path = Path(path)
    try:
        import soundfile

        info = soundfile.info(str(path))
        sr, seconds = info.samplerate, info.frames / info.samplerate
    except ImportError:
        with wave.open(str(path), "rb") as w:
            sr, seconds = w.getframerate(), w.getnframes() / w.getframerate()
    return {"file": path.name, "sample_rate": int(sr), "seconds": round(seconds, 3)}


def write_result(out_dir, result: dict) -> Path:
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ValueError(f"a result needs {', '.join(REQUIRED)}; missing {missing}")
    path = Path(out_dir) / RESULT
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return path


def read_result(out_dir) -> dict:
    """The worker's ``result.json`` from ``out_dir``, checked; audio paths made absolute.

    Raises ValueError naming what is wrong (no result: the worker did not finish; ``ok`` false: its
    error, as the worker recorded it).
    """
    out = Path(out_dir)
    path = out / RESULT
    if not path.exists():
        raise ValueError(f"no {RESULT} in {out}: the runner did not finish; see its log "
                         f"({out / 'worker.log'})")
    result = json.loads(path.read_text())
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ValueError(f"{path} is not a runner result: missing {missing}")
    for call in result["calls"]:
        if call.get("audio"):
            call["audio"]["path"] = str(out / call["audio"]["file"])
    if not result["ok"]:
        raise ValueError(f"the {result['system']} runner failed: {result.get('error')}")
    return result


def call_rows(result: dict) -> list[dict]:
    """One row per upstream call of a result, for a table: time, peak memory, GPT-stage speed, audio, RTF.

    Every number is *measured* by the worker on ``result["device"]``; peak memory only on CUDA.
    """
    rows = []
    for call in result["calls"]:
        audio = call.get("audio") or {}
        row = {"call": call["target"] + (f" [{call['label']}]" if call.get("label") else ""),
               "seconds": call.get("seconds"), "peak_gib": call.get("peak_gib"),
               "t2s_tokens_per_s": call.get("t2s_tokens_per_s"), "audio_s": audio.get("seconds")}
        if audio.get("seconds"):
            row["rtf"] = call["seconds"] / audio["seconds"]  # Table rounds for display
        rows.append(row)
    return rows


def stage_rows(result: dict) -> list[dict]:
    """The per-stage rows the worker recorded (seconds, peak above the level at entry, GiB held after)."""
    return [row for row in result.get("stages", []) if "seconds" in row]
