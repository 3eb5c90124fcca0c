"""GPT-SoVITS v2 in its own environment: upstream's pipeline, then the same T2S inputs through ours.

Imported only by the worker, inside the GPT-SoVITS environment (Python 3.10), with the clone's root
and ``GPT_SoVITS/`` on ``sys.path`` as RVC-Boss/GPT-SoVITS api_v2.py @48b1a01 does.

Around every ``TTS.run`` the GPT stage is timed: ``TTS.run`` picks ``infer_panel_batch_infer``
(``parallel_infer=True``) or ``infer_panel_naive_batched`` and assigns it to ``infer_panel``
before decoding, so the worker wraps those two methods on the model instance. The wrapper also
keeps the T2S inputs of every decode call of the first greedy run (phoneme ids, BERT features, prompt
semantics from upstream's own front end): ``TTS.run`` calls ``infer_panel`` once per batch of segments
(one segment per call at its default ``batch_size=1``). ``finish`` decodes every segment again with
``colab_tts.t2s`` loaded from the same checkpoint and compares the greedy tokens segment by segment; on
CUDA it also times upstream's own CUDA-graph decoder (``CUDAGraphRunner``, RVC-Boss/GPT-SoVITS
GPT_SoVITS/AR/models/t2s_model_cudagraph.py @48b1a01, as GPT_SoVITS/inference_webui.py calls it) and
ours (``colab_tts.compiled.compiled_step``) on the same segments.
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
        if _T2S.get("capture"):
            CAPTURED["calls"].append(((x, x_lens, prompts, bert_feature), tokens))
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
    # the first greedy run: keep the inputs of each of its decode calls for the comparison
    _T2S["capture"] = call["kwargs"].get("top_k") == 1 and not CAPTURED.get("calls")
    if _T2S["capture"]:
        CAPTURED["calls"] = []
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


def captured_segments(device):
    """Every segment the greedy run decoded, in call order: (segments, prompt, upstream's tokens per segment).

    Upstream passes each call's phoneme ids as rows (a list, or a right-padded tensor) with their true
    lengths, and BERT features as (1024, T) per row: un-padded and transposed here."""
    from colab_tts.t2s_runner import Segment

    segments, tokens, prompt = [], [], None
    for (x, x_lens, prompts, bert), call_tokens in CAPTURED["calls"]:
        for i in range(len(x)):
            n = int(x_lens[i])
            segments.append(Segment(x[i][:n].to(device), bert[i][:, :n].T.to(device)))
        tokens.extend(call_tokens)
        if prompt is None and prompts is not None:
            prompt = prompts[0].to(device)  # TTS.run expands one reference prompt over every row
    return segments, prompt, tokens


def agreement(tokens: list, reference: list) -> dict:
    """Greedy tokens against upstream's naive ones, segment by segment."""
    same = [a == b for a, b in zip(tokens, reference)]
    return {"identical_to_upstream": len(tokens) == len(reference) and all(same),
            "segments_identical": f"{sum(same)}/{len(reference)}",
            "differing_segments": [i for i, ok in enumerate(same) if not ok]}


def _row(seconds: float, tokens: list, reference: list, **more) -> dict:
    n = sum(len(t) for t in tokens)
    return {"seconds": round(seconds, 4), "tokens": n, "tokens_per_s": round(n / max(seconds, 1e-9), 1),
            **agreement(tokens, reference), **more}


# label -> why the path needs CUDA (its skip line without one)
CUDA_GRAPH_PATHS = {
    "upstream CUDA graph (CUDAGraphRunner), one segment at a time":
        "upstream's CUDAGraphRunner (GPT_SoVITS/AR/models/t2s_model_cudagraph.py @48b1a01) captures a torch.cuda graph",
    "ours, CUDA graph (torch.compile reduce-overhead), static cache, length buckets of 8":
        "torch.compile(mode='reduce-overhead') makes CUDA graphs only on a CUDA device",
}


def _upstream_cuda_graph(segments, prompt, weights_path, device, dtype, sampling, early_stop_num):
    """A decode of every segment by upstream's CUDA-graph runner, called as GPT_SoVITS/inference_webui.py
    @48b1a01 does (one segment per ``T2SRequest``, ``use_cuda_graph=True``), greedy (``top_k=1``)."""
    import torch
    from AR.models.structs_cudagraph import T2SRequest  # upstream, on sys.path (see the module docstring)
    from AR.models.t2s_model_cudagraph import CUDAGraphRunner

    runner = CUDAGraphRunner(CUDAGraphRunner.load_decoder(weights_path), device, dtype)

    def decode() -> list:
        out = []
        for s in segments:
            request = T2SRequest([s.phonemes], torch.tensor([len(s.phonemes)], device=device), prompt[None],
                                 [s.bert.T.to(dtype)], valid_length=1, top_k=1, top_p=1, temperature=1.0,
                                 early_stop_num=early_stop_num, repetition_penalty=sampling.repetition_penalty,
                                 use_cuda_graph=True)
            with torch.no_grad():
                result = runner.generate(request)
            if result.exception is not None:
                raise RuntimeError(f"CUDAGraphRunner.generate: {type(result.exception).__name__}: {result.exception}")
            out.append([int(t) for t in result.result[0]])
        return out

    return decode


def _ours_cuda_graph(model, segments, prompt, sampling, cap):
    """A decode of every segment by ours: the compiled step on a fixed-shape static cache, buckets of 8."""
    from colab_tts import compiled
    from colab_tts.t2s_runner import decode_segments

    step = compiled.compiled_step(model)
    return lambda: decode_segments(model, segments, prompt, sampling, cache="static", batch_size=8,
                                   max_new_tokens=cap, fixed_shape=True, step_fn=step).tokens


def cuda_graph_rows(segments, prompt, reference, model, weights_path, sampling, cap: int, early_stop_num: int,
                    cuda: bool) -> dict:
    """Upstream's CUDA-graph path and ours on the captured segments, or without CUDA one line each saying so.

    Each path decodes everything twice: the first pass captures its graphs (ours also compiles), the
    second is timed. A path that fails gives its one-line error instead of a row."""
    if not cuda:
        return {label: {"skipped": f"needs CUDA: {why}; this run has {model.device.type}"}
                for label, why in CUDA_GRAPH_PATHS.items()}
    upstream_label, ours_label = CUDA_GRAPH_PATHS
    paths = {upstream_label: lambda: _upstream_cuda_graph(segments, prompt, weights_path, model.device,
                                                          model.dtype, sampling, early_stop_num),
             ours_label: lambda: _ours_cuda_graph(model, segments, prompt, sampling, cap)}
    rows = {}
    for label, build in paths.items():
        try:
            decode = build()
            t0 = time.perf_counter()
            decode()
            _sync()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            tokens = decode()
            _sync()
            rows[label] = _row(time.perf_counter() - t0, tokens, reference, first_pass_seconds=round(first, 4))
        except Exception as e:  # one path failing must not lose the other rows
            rows[label] = {"failed": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        rows[label]["of"] = "upstream" if label == upstream_label else "ours"
    return rows


def finish(plan: dict, out) -> dict:
    """Our decode loop on upstream's captured greedy inputs, every segment: tokens identical? how fast?"""
    if not plan["settings"].get("compare_greedy") or not CAPTURED.get("calls"):
        return {"greedy_comparison": "skipped: no greedy (top_k=1) TTS.run call in the plan"}
    import torch

    from colab_tts.decoding import Sampling  # our decode loop
    from colab_tts.t2s import load_gpt_sovits_checkpoint
    from colab_tts.t2s_runner import decode_segments

    device = torch.device(CAPTURED["device"])
    dtype = torch.float16 if CAPTURED["is_half"] else torch.float32
    model = load_gpt_sovits_checkpoint(CAPTURED["t2s_weights_path"], dtype=dtype, device=device)
    segments, prompt, reference = captured_segments(device)
    greedy = Sampling(greedy=True, repetition_penalty=float(CAPTURED["kwargs"].get("repetition_penalty", 1.35)))
    cap = int(plan["settings"]["greedy_max_new_tokens"])
    rows = {}
    for label, cache, batch in (("ours, one segment at a time", "concat", 1),
                                ("ours, static cache, length buckets of 8", "static", 8)):
        g = decode_segments(model, segments, prompt, greedy, cache=cache, batch_size=batch, max_new_tokens=cap)
        rows[label] = {**_row(g.seconds, g.tokens, reference), "of": "ours"}
    rows.update(cuda_graph_rows(segments, prompt, reference, model, CAPTURED["t2s_weights_path"], greedy, cap,
                                int(CAPTURED["kwargs"].get("early_stop_num", -1)), cuda=device.type == "cuda"))
    return {"greedy_comparison": rows, "upstream_greedy_tokens": sum(len(t) for t in reference),
            "greedy_segments": len(reference)}
