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


@pytest.mark.parametrize("option, value, says", [
    ("--port", "99999", "port must lie in 0 .. 65535"), ("--port", "65536", "port must lie in 0 .. 65535"),
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
