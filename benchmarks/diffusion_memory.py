"""Diffusion / flow-matching memory on this machine: the seed's table, measured side by side in one run.

Real size by default (IndexTTS-2's DiT: hidden 512, 8 heads, depth 13; a vocoder on BigVGAN v2's
layout), on short mels so that a shared 2-core CPU finishes in a few minutes; on a GPU the same
script runs on CUDA (half precisions chosen by the GPU's compute capability: no bfloat16 on a T4).
``--size small`` is the notebook's CI size. Every verdict prints where it was measured and whether it
transfers to a GPU.

    .venv/bin/python benchmarks/diffusion_memory.py [--size real|small] [--frames 16] [--threads 1]
"""

import argparse
import time

import torch

from colab_tts import flow, hardware
from colab_tts.lessons import diffusion_8gb as lesson

TEXTS = {
    "zh": "今天天气很好，我们去公园散步吧。你想一起来吗？当然！不过，我要先把作业写完，再吃午饭；然后我们出发。"
          "公园里有很多人，有的在跑步，有的在下棋。",
    "en": "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were "
          "striking thirteen. Then, slowly, the rain began to fall; we went inside.",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["real", "small"], default="real")
    ap.add_argument("--frames", type=int, default=16, help="target mel frames (86 per second of audio)")
    ap.add_argument("--prompt-frames", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--reference-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadier on a shared CPU)")
    args = ap.parse_args()

    run = lesson.setup("T4", real_size=args.size == "real", cpu_threads=args.threads)
    device, dit_cfg = run.device, run.dit_config
    torch.manual_seed(0)
    dit, vocoder = flow.DiT(dit_cfg).eval(), flow.Vocoder(run.vocoder_config).eval()
    print(run)
    print(f"device {device}; DiT {flow.param_count(dit) / 1e6:.1f} M params (hidden {dit_cfg.hidden}, depth "
          f"{dit_cfg.depth}); vocoder {flow.param_count(vocoder) / 1e6:.1f} M; {args.frames} target + "
          f"{args.prompt_frames} prompt frames")
    t0 = time.perf_counter()
    inputs = flow.make_inputs(dit_cfg, args.frames, args.prompt_frames)

    # The storage counter's own cost, measured: the real-size runs are then timed while tracked.
    if device.type == "cpu":
        plain = min(lesson.measure_pipeline(dit, vocoder, inputs, 4, device=device)[2] for _ in range(2))
        tracked = min(lesson.measure_pipeline(dit, vocoder, inputs, 4, device=device, separate_timing=False)[2]
                      for _ in range(2))
        print(f"tracking overhead: tracked/plain time = {tracked / plain:.3f} (4 steps + vocoder, best of 2 each; "
              f"a shared CPU adds noise of its own)")

    mid = 25 if 25 in args.steps else args.steps[len(args.steps) // 2]
    result = lesson.claims_sweep(dit, vocoder, args.steps, mid, run.precisions, target_frames=(args.frames,),
                             prompt_frames=args.prompt_frames, reference_steps=args.reference_steps, device=device,
                             separate_timing=args.size == "small")
    print(result.table("s2mel stage (sampler + vocoder), error against the fp32 "
                       f"{args.reference_steps}-step reference"))

    trajectory = lesson.trajectory_peaks(dit, steps=(5, mid), target_frames=args.frames,
                                       prompt_frames=args.prompt_frames, device=device)
    print(trajectory.table("sampler alone: peak MiB without / with keep_trajectory"))
    ckpt = lesson.checkpointing_peaks(dit, target_frames=args.frames, prompt_frames=args.prompt_frames, device=device)
    print(ckpt.table("one estimator call: gradient checkpointing under no_grad and with grad"))

    small_dit, small_voc = flow.DiT(flow.SMALL_DIT).eval(), flow.Vocoder(flow.SMALL_VOCODER).eval()
    chunks = lesson.chunk_sweep(small_dit, small_voc, TEXTS, max_tokens=(20, 60, None), steps=4, device=device)
    print(chunks.table("chunk length against peak (small models; ~4 tokens per second of speech assumed)"))

    print("\nThe circulated claims:")
    precision = [v for p in run.precisions for v in (lesson.claim_precision(result, p, mid),
                                                     lesson.claim_precision_speed(result, p, mid))]
    for verdict in (lesson.claim_steps(result) + [lesson.claim_trajectory(trajectory)] + precision
                    + [lesson.claim_fp16_halves_indextts2()] + lesson.claim_checkpointing(ckpt)
                    + [lesson.claim_offload(result, mid)] + lesson.claim_chunks(chunks)):
        print("-", verdict)
    print(lesson.what_the_error_shows(result))

    act = lesson.stage_activations(dit, vocoder, args.frames, args.prompt_frames, steps=2, device=device)
    detected = [run.gpu] if run.gpu is not None and not run.simulated else []
    cards = detected + [hardware.get_gpu("RTX-4060"), hardware.get_gpu("T4"), hardware.GpuSpec("6 GB card", (8, 6), 5.8, 360, 25)]
    for gpu in dict.fromkeys(cards):
        print()
        print(lesson.recommend_8gb(gpu, result, act))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
