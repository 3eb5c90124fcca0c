"""Command line: ``python -m colab_tts doctor | plan | synth | selftest | serve``.

    python -m colab_tts doctor --gpu T4
    python -m colab_tts selftest
    python -m colab_tts plan --model orpheus-3b --gpu T4 --seconds 30
    python -m colab_tts plan --model metavoice-1b --gpu all
    python -m colab_tts plan --model orpheus-3b --gpu RTX-3070 --seconds 30 --fit --quality 8bit
    python -m colab_tts synth "Hello there." -o hello.wav --offline
    python -m colab_tts serve --seconds 30 --concurrency 4

Each sub-command is a function taking the parsed arguments; `main` turns our own bad-input errors
(a ValueError raised by this package's checks: unknown GPU, a fraction above 1, empty text) into one
line on stderr and exit code 2. Anything else - a TypeError, or an error from inside torch or vLLM - is
a bug or a real failure and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import hardware
from ._checks import OneLineParser, one_line


def cmd_doctor(args) -> int:
    from .vllm_cpu import kernel_library_env_line

    report = hardware.detect(simulate=args.gpu)
    print(report)
    print(kernel_library_env_line())
    if report.gpu is not None:
        print("\nRecommendations:")
        for line in hardware.recommendations(report.gpu):
            print(f"  - {line}")
    return 0


def vllm_command_line(model_id: str, engine_kwargs: dict) -> str:
    """`vllm serve MODEL --flag value ...` for engine kwargs (booleans become bare flags)."""
    parts = ["vllm serve", model_id]
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is not False and value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)


def _plan_request(args, spec) -> tuple[int, str | None]:
    """max_model_len from --max-model-len, or from --seconds at the model's tokens per second (capped at its
    context, with the reason), refusing flags that would be ignored."""
    from . import kv_cache
    from ._checks import positive
    from .kv_fit import audio_rate

    if args.max_model_len is not None:
        if args.seconds is not None or args.tokens_per_second is not None:
            raise ValueError("give --max-model-len, or --seconds (with --tokens-per-second), not both: "
                             "--max-model-len would override them")
        positive(args.max_model_len, "--max-model-len", integer=True)
        return args.max_model_len, None  # an explicit length beyond the context is refused by the plan
    seconds = 30.0 if args.seconds is None else positive(args.seconds, "--seconds")
    if args.tokens_per_second is not None:
        positive(args.tokens_per_second, "--tokens-per-second")
    rate = audio_rate(spec.name, args.tokens_per_second)
    if rate is None:
        if args.seconds is not None:
            raise ValueError(f"{spec.name} has no known tokens per second of audio, so --seconds cannot set its "
                             "length: add --tokens-per-second, or give --max-model-len")
        return spec.max_position_embeddings, (f"{spec.name} has no known tokens per second of audio: planned for its "
                                              f"whole context of {spec.max_position_embeddings:,} tokens")
    return kv_cache.request_len(spec, seconds, rate)


def cmd_plan(args) -> int:
    from . import kv_cache
    from ._checks import positive
    from .display import Table
    from .models import ModelSpec, known_models
    from .plan_table import catalog_rows, fit_rows, verdict

    spec = ModelSpec.from_config(args.model) if args.model.endswith(".json") else ModelSpec.known(args.model)
    hub_id = known_models().get(spec.name, {}).get("hub_id", args.model)
    if args.quality is not None and not args.fit:
        raise ValueError("--quality sets what --fit may change: add --fit, or drop --quality")
    if args.other_gib is not None:
        positive(args.other_gib, "--other-gib", allow_zero=True)
        largest = max(g.memory_gib for g in hardware.GPUS.values())
        if args.other_gib >= largest:
            raise ValueError(f"--other-gib {args.other_gib:g} is more than any catalog card holds ({largest:.2f} GiB): "
                             "it is in GiB (nvidia-smi prints MiB: divide by 1024)")
    max_len, why = _plan_request(args, spec)
    common = dict(dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size, vllm_version=args.vllm_version,
                  gpu_memory_utilization=args.gpu_memory_utilization)
    if why:
        print(f"note: {why}")
    every = args.gpu.strip().lower() == "all"
    if not every:
        # this process exits before vLLM starts: the CUDA context the reading creates is not held then
        other = args.other_gib if args.other_gib is not None else hardware.other_gib_now(args.gpu, own_context=False)
        if args.fit:
            plan = kv_cache.fit_vllm(spec, args.gpu, max_model_len=max_len, quality=args.quality or "lossless",
                                     other_gib=other, tokens_per_second=args.tokens_per_second, **common)
        else:
            plan = kv_cache.plan_vllm(spec, args.gpu, max_model_len=max_len, other_gib=other, **common)
        print(plan.explain())
        if not plan.fits:  # no paste-ready line for settings vLLM would refuse: the fix is above
            print("\nNo vLLM command line: these settings do not fit (the fix is above; `--fit` searches for one)")
            return 1
        print("\nvLLM engine arguments:", plan.engine_kwargs())
        print("Command line:", vllm_command_line(hub_id, plan.engine_kwargs()))
        return 0
    if args.fit:
        rows = fit_rows(spec, max_len, other_gib=args.other_gib, own_context=False, quality=args.quality or "lossless",
                        tokens_per_second=args.tokens_per_second, **common)
        title = f"fit_vllm: {spec.name}, max_model_len={max_len:,}, quality={args.quality or 'lossless'}"
    else:
        rows = catalog_rows(spec, max_len, other_gib=args.other_gib, own_context=False, **common)
        title = (f"{spec.name}, max_model_len={max_len:,}, gpu_memory_utilization="
                 f"{args.gpu_memory_utilization or 'vLLM default'}")
    print(Table(rows, title=title))
    print(f"\n{spec.name}, one request of {max_len:,} tokens: {verdict(rows)}.")
    from .systems import SYSTEMS

    for system in SYSTEMS:
        if system.model == spec.name:
            print(f"{system.label}: {system.note} (the table plans the decoder alone; "
                  "colab_tts.systems.fit_table counts the other stages)")
    return 0


def check_synth_args(args):
    """Every synth argument checked before a model loads: one ValueError naming the user's value."""
    from ._checks import choose, positive
    from ._files import output_file
    from .audio import sound_suffixes
    from .orpheus import VOICES

    if not args.text.strip():
        raise ValueError('text is empty: give the words to speak, e.g. synth "Hello there." -o hello.wav')
    try:
        args.text.encode()
    except UnicodeEncodeError:
        raise ValueError("text holds bytes that are not valid UTF-8: give the words as text") from None
    args.output = output_file(args.output, sound_suffixes(), "-o/--output")
    args.voice = choose(args.voice, VOICES, "voice")
    positive(args.seconds, "--seconds")
    if args.seconds > MAX_SECONDS:
        raise ValueError(f"--seconds {args.seconds:g} is more audio than one request can hold; at most "
                         f"{MAX_SECONDS:g} (longer texts are split into sentences anyway)")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must lie in 0 .. 2**63-1, got {args.seed}")
    return args


MAX_SECONDS = 3600.0


def cmd_synth(args) -> int:
    from .orpheus import OrpheusTTS

    check_synth_args(args)  # before loading a model
    if args.offline:
        tts = OrpheusTTS.offline_demo(backend=args.backend)
        print("offline demo: random weights, so the audio is noise; the pipeline is the real one")
    else:
        tts = OrpheusTTS.from_pretrained(backend=args.backend, max_audio_seconds=args.seconds)
    with tts:
        speech = tts.synthesize(args.text, voice=args.voice, seed=args.seed)
        path = speech.save(args.output)
    from .widgets import timing_line

    print(f"wrote {path}: {timing_line(speech)}")
    return 0


def cmd_selftest(args) -> int:
    from ._checks import positive
    from .selftest import main as selftest_main

    positive(args.emulate_gib, "--emulate-gib")  # before any CUDA work

    return selftest_main(only=args.only, fraction_gib=args.emulate_gib)


def cmd_serve(args) -> int:
    from .serve import start

    server = start(gpu=args.gpu, seconds=args.seconds, concurrency=args.concurrency, quality=args.quality,
                   host=args.host, port=args.port, offline=args.offline or None, weights=args.weights,
                   queue_limit=args.queue_limit, log_dir=args.log_dir, background=False)
    print(server.plan.note())
    print(f"serving {server.model_name} at {server.url} (POST /v1/audio/speech, GET / for the page); Ctrl-C stops",
          flush=True)
    server.run()
    print("stopped: every stream ended, the engine is closed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m colab_tts", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = sub.add_parser("doctor", help="report the GPU in use (or a simulated one) and what it can run",
                            description="Report the GPU, its compute capability, memory, bf16 support and "
                                        "the dtype to use. With no GPU, --gpu simulates a catalog GPU.")
    doctor.add_argument("--gpu", default=None, metavar="NAME",
                        help=f"GPU to simulate when none is present; one of: {', '.join(hardware.GPUS)}")
    doctor.set_defaults(func=cmd_doctor)

    from .kv_cache import ORPHEUS_TOKENS_PER_SECOND

    plan = sub.add_parser("plan", help="predict vLLM's memory budget and KV cache for a model on a GPU",
                          description="Predict what vLLM will do: weights, activations, KV cache, the largest "
                                      "max_model_len, and the engine arguments as a vLLM command line.")
    plan.add_argument("--model", default="orpheus-3b",
                      help="a bundled model (orpheus-3b, llama-3.2-3b, metavoice-1b, indextts2-gpt, "
                           "gpt-sovits-v2-t2s) or a path to a config.json")
    plan.add_argument("--gpu", default="T4", help="a catalog GPU, or 'all' for a fit table across the catalog")
    plan.add_argument("--seconds", type=float, default=None,
                      help="longest audio one request must hold (default 30), at the model's tokens per second; "
                           "capped at the model's context")
    plan.add_argument("--tokens-per-second", type=float, default=None,
                      help=f"model tokens per second of audio (default: the model's own; Orpheus "
                           f"{ORPHEUS_TOKENS_PER_SECOND:.2f})")
    plan.add_argument("--max-model-len", type=int, default=None, help="instead of --seconds")
    plan.add_argument("--gpu-memory-utilization", type=float, default=None,
                      help="default: vLLM's own for --vllm-version (vllm_versions.default_gmu); with --fit: "
                           "searched up to what vLLM's start-up check allows")
    plan.add_argument("--dtype", default="auto", help="auto, float16, bfloat16 or float32")
    plan.add_argument("--tensor-parallel-size", type=int, default=1)
    plan.add_argument("--other-gib", type=float, default=None,
                      help="GiB other processes already hold on the card (a desktop, a browser); default: read "
                           "from the GPU present (torch.cuda.mem_get_info), 0 without one")
    plan.add_argument("--vllm-version", default=None, help="e.g. 0.8.3 for the V0 engine (default: the one notebooks install on Colab)")
    plan.add_argument("--fit", action="store_true",
                      help="search the settings that fit (max_num_seqs, gpu_memory_utilization, enforce_eager, "
                           "KV dtype, quantization within --quality) and print the fastest")
    plan.add_argument("--quality", default=None, choices=["lossless", "8bit", "4bit"],
                      help="with --fit: the weight/KV precision you accept (default lossless)")
    plan.set_defaults(func=cmd_plan)

    synth = sub.add_parser("synth", help="speak a text with Orpheus and write a sound file",
                           description="Synthesize TEXT with Orpheus-TTS. --offline runs the same pipeline with "
                                       "random weights and no downloads (the audio is noise).")
    synth.add_argument("text")
    synth.add_argument("-o", "--output", default="speech.wav", help="output file (.wav, .flac)")
    synth.add_argument("--voice", default="tara")
    synth.add_argument("--offline", action="store_true", help="no downloads: a tiny random model")
    synth.add_argument("--backend", default="transformers", choices=["vllm", "transformers"])
    synth.add_argument("--seconds", type=float, default=30.0, help="longest audio to plan for")
    synth.add_argument("--seed", type=int, default=None)
    synth.set_defaults(func=cmd_synth)

    selftest = sub.add_parser("selftest", help="run every CUDA path once and print a pass/fail table (< 5 min)",
                              description="Check the CUDA paths this project relies on: the bfloat16 refusal "
                                          "below CC 8.0, fp16 Orpheus through vLLM and transformers, SNAC, "
                                          "track_peak, offload hooks, CUDA-graph decode, an 8 GB allocator cap. "
                                          "Without CUDA the CUDA checks are listed as skipped and it exits 0.")
    selftest.add_argument("--only", nargs="*", default=None, metavar="CHECK", help="run only these checks")
    selftest.add_argument("--emulate-gib", type=float, default=8.0,
                          help="memory cap for the allocator check, GiB (8: an 8 GB card)")
    selftest.set_defaults(func=cmd_selftest)

    serve = sub.add_parser("serve", help="serve Orpheus as an OpenAI-compatible streaming speech endpoint",
                           description="Plan vLLM for the detected GPU (fit_vllm), start it in this process and serve "
                                       "POST /v1/audio/speech (OpenAI's shape), GET /v1/models, GET /health and a "
                                       "page at GET /. Without a GPU (or with --offline): a tiny random model on "
                                       "vllm-cpu, so the audio is noise.")
    serve.add_argument("--seconds", type=float, default=30.0, help="longest audio one request may produce (30)")
    serve.add_argument("--concurrency", type=int, default=4, help="streams decoded together: max_num_seqs (4)")
    serve.add_argument("--quality", default="lossless", choices=["lossless", "8bit", "4bit"],
                       help="weight/KV precision fit_vllm may use (default lossless)")
    serve.add_argument("--queue-limit", type=int, default=4,
                       help="admit concurrency x this many requests; beyond, 429 with Retry-After (4)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (8000)")
    serve.add_argument("--gpu", default=None, help="plan for this catalog GPU instead of the detected one")
    serve.add_argument("--offline", action="store_true", help="the tiny random model on vllm-cpu (noise)")
    serve.add_argument("--weights", default="canopylabs", help="canopylabs (gated), unsloth (mirror), a hub id or folder")
    serve.add_argument("--log-dir", default="serve-logs", help="vLLM's and the HTTP server's logs (serve-logs/)")
    serve.set_defaults(func=cmd_serve)
    return parser


PACKAGE = Path(__file__).resolve().parent


def is_bad_input(err: BaseException) -> bool:
    """A ValueError raised by this package's own code (its argument checks), not by torch, vLLM or a bug's
    TypeError: where the traceback ends decides."""
    if not isinstance(err, ValueError):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        if not is_bad_input(err):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
