"""GPT-SoVITS v2 in its own environment: upstream's pipeline, then the same T2S inputs through ours.

Imported only by the worker, inside the GPT-SoVITS environment (Python 3.10), with the clone's root
and ``GPT_SoVITS/`` on ``sys.path`` as RVC-Boss/GPT-SoVITS api_v2.py @48b1a01 does.

Around every ``TTS.run`` the GPT stage is timed: ``TTS.run`` picks ``infer_panel_batch_infer``
(``parallel_infer=True``) or ``infer_panel_naive_batched`` and assigns it to ``infer_panel``
before decoding, so the worker wraps those two methods on the model instance. The wrapper also
keeps the T2S inputs of the first greedy run (phoneme ids, BERT features, prompt semantics from
upstream's own front end); ``finish`` decodes them again with ``colab_tts.t2s`` loaded from the same
checkpoint and compares the greedy tokens.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

CAPTURED: dict = {}
STAGES: list = []
_T2S: dict = {}  # per TTS.run: seconds and tokens of the GPT stage


def import_upstream(plan: dict) -> dict:
    from TTS_infer_pack.TTS import TTS, TTS_Config  # upstream, on sys.path (see the module docstring)

    return {"TTS_Config": TTS_Config, "TTS": TTS}


def _sync():
    from colab_tts.devices import accelerator, sync

    sync(accelerator())


def _timed(method, name: str):
    def wrapper(x, x_lens, prompts, bert_feature, *args, **kwargs):
        _sync()
        t0 = time.perf_counter()
        y_list, idx_list = method(x, x_lens, prompts, bert_feature, *args, **kwargs)
        _sync()
        _T2S["seconds"] = _T2S.get("seconds", 0.0) + time.perf_counter() - t0
        # y = prompt semantics + generated tokens (EOS dropped). TTS.run keeps y[-idx:], which is the
        # same sequence when decoding ends at EOS; after an early stop / the 1500 cap it is one short.
        start = prompts.shape[1] if prompts is not None else 0
        tokens = [[int(t) for t in y[start:]] for y in y_list]
        _T2S.setdefault("tokens", []).extend(tokens)
        _T2S["path"] = name
        if _T2S.get("capture") and "inputs" not in CAPTURED:
            CAPTURED["inputs"] = (x, x_lens, prompts, bert_feature)
            CAPTURED["tokens"] = tokens
            CAPTURED["kwargs"] = {k: v for k, v in kwargs.items() if isinstance(v, (int, float))}
        return y_list, idx_list

    return wrapper


def after_build(name: str, obj, plan: dict) -> None:
    if name != "TTS":
        return
    model = obj.t2s_model.model
    for method in ("infer_panel_batch_infer", "infer_panel_naive_batched"):
        setattr(model, method, _timed(getattr(model, method), method))
    CAPTURED["t2s_weights_path"] = obj.configs.t2s_weights_path
    CAPTURED["is_half"] = bool(obj.configs.is_half)
    CAPTURED["device"] = str(obj.configs.device)


@contextmanager
def around(call: dict, plan: dict, objects: dict):
    extra: dict = {}
    _T2S.clear()
    _T2S["capture"] = call["kwargs"].get("top_k") == 1  # a greedy run: keep its inputs for the comparison
    yield extra
    if "seconds" in _T2S:
        n = sum(len(t) for t in _T2S["tokens"])
        extra.update(t2s_path=_T2S["path"], t2s_seconds=round(_T2S["seconds"], 4), t2s_tokens=n,
                     t2s_tokens_per_s=round(n / max(_T2S["seconds"], 1e-9), 1))


def audio(call: dict, value, out, index: int):
    """``TTS.run`` yields (sample_rate, int16 audio) pieces: joined into one wav."""
    import numpy as np

    from .protocol import write_wav

    if not value:
        return None
    sr = value[0][0]
    wav = np.concatenate([np.asarray(a).reshape(-1) for _, a in value])
    return write_wav(out / f"gpt_sovits_{index}.wav", wav, sr)


def finish(plan: dict, out) -> dict:
    """Our decode loop on upstream's captured greedy inputs: tokens identical? how fast?"""
    if not plan["settings"].get("compare_greedy") or "inputs" not in CAPTURED:
        return {"greedy_comparison": "skipped: no greedy (top_k=1) TTS.run call in the plan"}
    import torch

    from colab_tts.decoding import Sampling  # our decode loop
    from colab_tts.t2s import load_gpt_sovits_checkpoint
    from colab_tts.t2s_runner import Segment, decode_segments

    x, x_lens, prompts, bert = CAPTURED["inputs"]
    device = torch.device(CAPTURED["device"])
    dtype = torch.float16 if CAPTURED["is_half"] else torch.float32
    model = load_gpt_sovits_checkpoint(CAPTURED["t2s_weights_path"], dtype=dtype, device=device)
    segments = [Segment(x[i][: int(x_lens[i])].to(device), bert[i][:, : int(x_lens[i])].T.to(device))
                for i in range(len(x))]
    prompt = prompts[0].to(device) if prompts is not None else None
    greedy = Sampling(greedy=True, repetition_penalty=float(CAPTURED["kwargs"].get("repetition_penalty", 1.35)))
    rows = {}
    for label, cache, batch in (("ours, one segment at a time", "concat", 1),
                                ("ours, static cache, length buckets of 8", "static", 8)):
        g = decode_segments(model, segments, prompt, greedy, cache=cache, batch_size=batch,
                            max_new_tokens=int(plan["settings"]["greedy_max_new_tokens"]))
        rows[label] = {"seconds": round(g.seconds, 4), "tokens": g.n_tokens,
                       "tokens_per_s": round(g.tokens_per_s, 1),
                       "identical_to_upstream": g.tokens == CAPTURED["tokens"]}
    return {"greedy_comparison": rows, "upstream_greedy_tokens": sum(len(t) for t in CAPTURED["tokens"])}
