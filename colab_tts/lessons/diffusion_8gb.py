"""Notebook 03's lesson: the circulated 8 GB claims, each judged where it was measured, and a plan.

Each ``claim_*`` returns a ``Verdict``: what was claimed, whether the measurement supports it, the
evidence, where the evidence comes from (*measured* in this run on which device, or *cited*), and
whether it transfers to a GPU and why. ``recommend_8gb`` turns IndexTTS-2's cited memory into a
plan for a card; the plots label their device. Measurements are in ``diffusion_8gb_sweeps``
(re-exported here, so a notebook needs only this module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from colab_tts import hardware
from colab_tts._checks import fraction, positive
from colab_tts.cited import cited, value
from colab_tts.flow_model import BIGVGAN_V2_22K, INDEXTTS2_DIT, param_count
from colab_tts.kv_cache import kv_bytes_per_token
from colab_tts.kv_fit import INDEXTTS2_TOKENS_PER_SECOND
from colab_tts.models import ModelSpec
from colab_tts.units import GB, GIB, MIB

from .diffusion_8gb_plots import plot_steps, plot_variants  # noqa: F401  (re-exported)
from .diffusion_8gb_sweeps import (  # noqa: F401  (re-exported)
    HALF_PRECISIONS,
    Measurements,
    Setup,
    Sweep,
    checkpointing_peaks,
    chunk_sweep,
    claims_sweep,
    measure,
    measure_pipeline,
    reference_mel,
    relative_error,
    setup,
    stage_activations,
    sweep,
    trajectory_peaks,
    where_measured,
)

PCIE3_X16_GBS = 8 * 16 * 128 / 130 / 8  # 15.75 GB/s: PCIe 3.0 (8 GT/s, 128b/130b) x16, the T4's bus (T4 datasheet)


@dataclass(frozen=True)
class Verdict:
    claim: str
    holds: bool
    evidence: str
    basis: str  # measured in this run on which device / cited (source, date)
    on_gpu: str  # whether it transfers to a GPU, and why

    def __str__(self) -> str:
        return (f"{'CONFIRMED' if self.holds else 'REFUTED'}: {self.claim} -> {self.evidence}\n"
                f"    basis: {self.basis}\n    on a GPU: {self.on_gpu}")


def _on_gpu(where: str, transfers: str, cpu_only: str | None = None) -> str:
    """What a verdict means on a GPU: measured there already, it transfers, or it is a CPU effect."""
    if "(CUDA)" in where:
        return "measured on the GPU itself"
    return f"does not transfer: {cpu_only}" if cpu_only else f"transfers: {transfers}"


# --- the circulated claims, each against its measurement -------------------------------------------

def claim_steps(result: Measurements, precision: str = "float32") -> list[Verdict]:
    """'Cutting steps cuts peak memory (7.9 GB at 100 -> 4.9 GB at 20)' and 'cutting steps cuts time'."""
    rows = sorted(result.select("steps", precision=precision, offload=False), key=lambda r: r["steps"])
    lo, hi = rows[0], rows[-1]
    change = hi["peak_mib"] / lo["peak_mib"] - 1
    per_step = [r["latency_s"] / r["steps"] for r in rows]
    return [
        Verdict("fewer diffusion steps need less peak memory (circulated: 4.9 GB at 20 vs 7.9 GB at 100)",
                abs(change) > 0.05, f"peak {lo['peak_mib']:.2f} MiB at {lo['steps']} steps, {hi['peak_mib']:.2f} MiB "
                f"at {hi['steps']} ({change:+.1%})", result.where,
                _on_gpu(result.where, "each Euler step allocates the same buffers and frees them before the next: "
                        "that is the sampler's code, not this device, and CUDA's caching allocator reuses the freed "
                        "blocks, so the peak stays flat on a GPU too")),
        Verdict("fewer steps take less time", hi["latency_s"] > 1.5 * lo["latency_s"],
                f"{lo['latency_s']:.2f} s at {lo['steps']} steps, {hi['latency_s']:.2f} s at {hi['steps']} "
                f"({min(per_step):.3f}-{max(per_step):.3f} s per step incl. the vocoder)", result.where,
                _on_gpu(result.where, "every step is the same estimator call on the same shapes, so time is linear "
                        "in steps on a GPU too (the seconds per step are the GPU's own)")),
    ]


def what_the_error_shows(result: Measurements, precision: str = "float32") -> str:
    """What the error column does and does not show (random weights cannot show quality)."""
    rows = sorted(result.select("steps", precision=precision, offload=False), key=lambda r: r["steps"])
    return (f"error = relative RMS deviation of the mel from the fp32 200-step solution, {result.where}: "
            f"{rows[0]['error']:.4f} at {rows[0]['steps']} steps, {rows[-1]['error']:.4f} at {rows[-1]['steps']}. "
            "It shows how far the Euler solver (or a lower precision) moves this computation from its converged "
            "answer. It does not show quality: with random weights the velocity field is not a trained one, so "
            "neither this number nor the noise it decodes to says how the speech would sound; judging fewer steps "
            "needs the trained weights and listening or an ASR/speaker-similarity test.")


def claim_trajectory(rows: Measurements) -> Verdict:
    """The one case where memory does grow with steps: keeping every intermediate mel."""
    lo, hi = rows[0], rows[-1]
    grew = hi["peak_mib_trajectory"] - lo["peak_mib_trajectory"]
    return Verdict("memory grows with steps when the trajectory is kept", grew > 0.05 * lo["peak_mib_trajectory"],
                   f"{lo['peak_mib_trajectory']:.2f} MiB at {lo['steps']} steps, {hi['peak_mib_trajectory']:.2f} MiB "
                   f"at {hi['steps']} (without keeping it: {lo['peak_mib']:.2f} and {hi['peak_mib']:.2f})", rows.where,
                   _on_gpu(rows.where, "one fp32 mel per kept step is the same number of bytes on any device"))


def claim_precision(result: Measurements, half: str, steps: int) -> Verdict:
    """'Use fp16/bf16': the stage's peak memory in half precision against float32, side by side."""
    fp32 = result.select("variants", precision="float32", offload=False, steps=steps)[0]
    low = result.select("variants", precision=half, offload=False, steps=steps)[0]
    ratio = low["peak_mib"] / fp32["peak_mib"]
    t4 = " A T4 has no bfloat16 (compute capability 7.5): there this row is float16." if half == "bfloat16" else ""
    return Verdict(f"{half} cuts the stage's peak memory", ratio < 0.75,
                   f"peak {low['peak_mib']:.2f} vs {fp32['peak_mib']:.2f} MiB (x{ratio:.2f}); deviation from the fp32 "
                   f"reference {low['error']:.4f} vs {fp32['error']:.4f} (numerical only: random weights cannot show "
                   "quality)", result.where,
                   _on_gpu(result.where, "a half-precision element is 2 bytes on every device." + t4 + " Whether it "
                           "sounds the same needs trained weights: IndexTTS-2's authors report a very small quality "
                           "loss for fp16 and keep its s2mel stage in fp32 (index-tts/index-tts @ee40fa7)"))


def t4_step_roofline(frames: int = 2600, config=INDEXTTS2_DIT) -> dict:
    """Predicted time of one Euler step (doubled batch) of the real DiT on a T4, fp32 vs fp16 (roofline).

    FLOPs: 2 per weight per token plus attention (4 T^2 hidden per layer), over 2 x ``frames`` tokens;
    bytes: the weights once. Time = the larger of FLOPs / peak and bytes / bandwidth - a lower bound.
    Peaks: 8.1 TFLOPS fp32 (``cited("t4_precision.fp32_tflops")``), the catalog's fp16 tensor TFLOPS.
    """
    positive(frames, "frames", integer=True)
    t4, params = hardware.get_gpu("T4"), param_count(config)
    flops = 2 * params * 2 * frames + 2 * 4 * frames**2 * config.hidden * config.depth
    out = {"frames": frames}
    for dtype, tflops, nbytes in (("float32", value("t4_precision.fp32_tflops"), 4), ("float16", t4.fp16_tflops, 2)):
        out[f"{dtype}_ms"] = 1e3 * max(flops / (tflops * 1e12), params * nbytes / (t4.bandwidth_gbs * 1e9))
    return out


def claim_precision_speed(result: Measurements, half: str, steps: int) -> Verdict:
    """'Half precision is faster': measured here, with the GPU expectation where here is a CPU."""
    fp32 = result.select("variants", precision="float32", offload=False, steps=steps)[0]
    low = result.select("variants", precision=half, offload=False, steps=steps)[0]
    ratio = low["latency_s"] / fp32["latency_s"]
    roof = t4_step_roofline()
    rtf16, rtf32 = value("indextts2.rtf_fp16_rtx4090"), value("indextts2.rtf_fp32_rtx4090")
    cpu = (f"on this CPU half precision runs through conversions, without the matrix units a GPU uses for it. "
           f"GPU expectation: a T4 runs float16 on its tensor cores ({hardware.get_gpu('T4').fp16_tflops:g} vs "
           f"{value('t4_precision.fp32_tflops'):g} TFLOPS in fp32, NVIDIA T4 datasheet): one real-size Euler step on "
           f"a 30 s chunk is predicted at {roof['float16_ms']:.0f} ms in fp16 vs {roof['float32_ms']:.0f} ms in fp32 "
           f"(roofline, a lower bound); it has no bfloat16 at all ({cited('t4_precision.no_bfloat16').source}). "
           f"Cited GPU measurement: IndexTTS-2 with use_fp16 (GPT only) on an RTX 4090, RTF {rtf32} -> {rtf16} "
           f"(x{rtf32 / rtf16:.2f} faster; index-tts/index-tts README.md @ee40fa7)")
    return Verdict(f"{half} is faster than float32", ratio < 0.95,
                   f"{low['latency_s']:.2f} vs {fp32['latency_s']:.2f} s at {steps} steps (x{ratio:.2f} the time)",
                   result.where, _on_gpu(result.where, "", cpu))


def claim_checkpointing(rows: Measurements) -> list[Verdict]:
    """'Gradient checkpointing saves 1.2 GB' - at inference (no_grad) and with grad."""
    peak = {(r["grad"], r["checkpointing"]): r["peak_mib"] for r in rows}
    out = []
    why = {False: "under no_grad autograd keeps nothing for backward on any device, so there is nothing to discard",
           True: "with grad every block keeps its activations for backward, the same bytes on any device"}
    for grad, where in ((False, "at inference (no_grad)"), (True, "with grad (training)")):
        off, on = peak[(grad, False)], peak[(grad, True)]
        saved = 1 - on / off
        out.append(Verdict(f"gradient checkpointing saves memory {where}", saved > 0.05,
                           f"{off:.2f} MiB without, {on:.2f} MiB with ({saved:+.0%} saved)", rows.where,
                           _on_gpu(rows.where, why[grad])))
    return out


def claim_offload(result: Measurements, steps: int) -> Verdict:
    """'Offload idle modules to the CPU': the peak drops by the idle stage's weights, paid in time."""
    on = result.select("variants", precision="float32", offload=True, steps=steps)[0]
    off = result.select("variants", precision="float32", offload=False, steps=steps)[0]
    idle, real = min(result.weights_mib().values()), result.weights_mib(real=True)
    saved = off["peak_mib"] - on["peak_mib"]
    copy_s = 2 * sum(real.values()) * MIB / (PCIE3_X16_GBS * GB)
    return Verdict("offloading idle stages lowers peak memory (by the idle stage's weights)", saved >= 0.9 * idle,
                   f"peak {on['peak_mib']:.2f} vs {off['peak_mib']:.2f} MiB: {saved:.2f} MiB saved, the smaller stage "
                   f"holds {idle:.2f} MiB at this width (at real size: {min(real.values()):.0f} of "
                   f"{sum(real.values()):.0f} MiB); latency {on['latency_s']:.2f} vs {off['latency_s']:.2f} s",
                   result.where,
                   _on_gpu(result.where, "the same bytes leave the device. The time does not transfer: here the "
                           f"'copy' is a memcpy; on a T4 moving both real-size stages in and out over PCIe 3.0 x16 "
                           f"takes at least {copy_s:.2f} s per utterance (predicted from the bus's "
                           f"{PCIE3_X16_GBS:.2f} GB/s peak)"))


def claim_chunks(rows: Measurements) -> list[Verdict]:
    """'Synthesise long text in chunks': peak follows the longest chunk."""
    out = []
    for name in dict.fromkeys(r["text"] for r in rows):
        mine = [r for r in rows if r["text"] == name]
        whole = next(r for r in mine if r["chunks"] == 1 or r["max_tokens"] == "no split")
        best = min(mine, key=lambda r: r["peak_mib"])
        out.append(Verdict(f"chunking long text lowers peak memory ({name})", best["peak_mib"] < 0.95 * whole["peak_mib"],
                           f"{best['peak_mib']:.2f} MiB in {best['chunks']} chunks of <= {best['max_tokens']} tokens vs "
                           f"{whole['peak_mib']:.2f} MiB unsplit; time {best['latency_s']:.2f} vs "
                           f"{whole['latency_s']:.2f} s", rows.where,
                           _on_gpu(rows.where, "activations grow with the frames of one call on any device")))
    return out


# --- IndexTTS-2 and Sambert-HiFiGAN, from their sources ----------------------------------------------

def indextts2_total_gb(dtype: str = "float32", emotion: bool = True) -> float:
    """IndexTTS-2's peak on an RTX 4090, GB as cited (index-tts PR #755); fp32 without QwenEmotion is derived."""
    emo = value("indextts2.vram_fp16_emotion_gb") - value("indextts2.vram_fp16_no_emotion_gb")
    if dtype == "float32":
        return value("indextts2.vram_fp32_emotion_gb") - (0 if emotion else emo)
    return value("indextts2.vram_fp16_emotion_gb" if emotion else "indextts2.vram_fp16_no_emotion_gb")


def claim_fp16_halves_indextts2() -> Verdict:
    """'use_fp16 halves IndexTTS-2's memory': only the GPT is halved, so the whole drops by about a fifth."""
    fp32, fp16 = indextts2_total_gb("float32"), indextts2_total_gb("float16")
    gpt_half = value("indextts2.gpt_checkpoint_gb") / 2
    share = 1 - fp16 / fp32
    return Verdict("IndexTTS-2's use_fp16 halves its memory", share > 0.4,
                   f"{fp32} GB -> {fp16} GB as cited (= {fp32 * GB / GIB:.2f} -> {fp16 * GB / GIB:.2f} GiB): "
                   f"{-share:+.0%} of the whole, not -50%. use_fp16 halves the GPT only (self.gpt.eval().half(); the "
                   f"s2mel stage runs with autocast off); halving gpt.pth's {value('indextts2.gpt_checkpoint_gb')} GB "
                   f"would save {gpt_half:.2f} GB, and {fp32 - fp16:.2f} GB is saved",
                   f"{cited('indextts2.vram_fp32_emotion_gb').label()}, RTX 4090; "
                   f"{cited('indextts2.fp16_scope').source}; the share is computed from them",
                   "a GPU measurement already (RTX 4090); the saving is the GPT's bytes, the same on a T4")


def sambert_premise() -> Verdict:
    """'Sambert-HiFiGAN runs out of memory on 8 GB cards', against its architecture."""
    return Verdict("Sambert-HiFiGAN runs out of memory on 8 GB cards, like IndexTTS-2", False,
                   f"its architecture has no diffusion stage to cut steps from ({cited('sambert.architecture').value}); "
                   f"it runs on the CPU ({cited('sambert.runs_on_cpu').value}); no published VRAM figure was found, "
                   "and nothing in it grows with steps. The 8 GB question is IndexTTS-2's",
                   f"cited: {cited('sambert.architecture').source}; {cited('sambert.runs_on_cpu').source}",
                   "not measured here (no Sambert model in this repository)")


# --- the 8 GB recipe ------------------------------------------------------------------------------

def stage_weights() -> dict:
    """IndexTTS-2's stages at real size: (fp32 bytes, where the figure comes from)."""
    gpt = cited("indextts2.gpt_checkpoint_gb")
    enc = cited("indextts2.semantic_encoder_params")
    return {
        "GPT (UnifiedVoice)": (gpt.value * GB, f"gpt.pth in fp32, {gpt.value} GB ({gpt.label()})"),
        "semantic encoder (w2v-BERT 2.0)": (enc.value * 4, f"{enc.value / 1e6:.0f} M parameters ({enc.label()})"),
        "s2mel DiT": (param_count(INDEXTTS2_DIT) * 4, "counted from the DiT built at IndexTTS-2's config"),
        "vocoder (BigVGAN v2 22 kHz)": (param_count(BIGVGAN_V2_22K) * 4, "counted from the vocoder on BigVGAN v2's layout"),
    }


RUNNER_LOG = "[colab_tts.deploy] IndexTTS2.infer"  # the worker's line per call, with its total_peak_gib


@dataclass
class Recipe:
    gpu: str
    budget_gib: float
    gpt_dtype: str  # IndexTTS-2's use_fp16 switch (the other stages stay in fp32, as there)
    s2mel_dtype: str
    steps: int
    max_text_tokens: int
    offload: bool
    peak_gib: float
    extra_s_per_utterance: float
    reasons: list[str]
    basis: str = "predicted"  # how peak_gib was found: predicted, or measured (on which GPU)
    settings: dict = field(default_factory=dict)  # the deploy runner's settings that run it

    @property
    def command(self) -> str:
        """The runner's command line for these settings, the allocator capped at the planned share."""
        sets = {**self.settings, "memory_cap_gib": self.budget_gib}
        return "python -m colab_tts.deploy indextts2 " + " ".join(
            f"--set {k}={json.dumps(v)}" for k, v in sets.items())

    def __str__(self) -> str:
        head = (f"{self.gpu}: GPT in {self.gpt_dtype}, s2mel in {self.s2mel_dtype}, {self.steps} steps, chunks of "
                f"{self.max_text_tokens} tokens, offload {'on' if self.offload else 'off'}; "
                f"peak ~{self.peak_gib:.2f} GiB of {self.budget_gib:.2f} planned ({self.basis}); "
                f"+{self.extra_s_per_utterance:.2f} s per utterance")
        run = [f"run it: {self.command}"] if self.settings else []
        return "\n".join([head] + [f"- {r}" for r in self.reasons] + run)


def recommend_8gb(gpu, measured: Measurements | None = None, activations: dict | None = None, *,
                  emotion: bool = True, headroom: float = 0.9, max_text_tokens: int | None = None,
                  tokens_per_s: float = 4.0) -> Recipe:
    """An IndexTTS-2 configuration for ``gpu``: a *prediction* (this project has run IndexTTS-2 on no card
    the plan names), with the kind and source of every figure in its reasons.

    Resident peak: IndexTTS-2's cited peak (PR #755, measured by its authors on an RTX 4090) plus the GPT's
    KV cache for one segment (predicted by count from its config). Offloaded: the largest stage plus what
    the cited total holds beyond the weights. Not counted, and the reasons say so: s2mel activations for a
    segment longer than the cited run's text (its length is not stated). ``activations`` (MiB per second of
    audio from ``stage_activations``, measured on ``measured``'s device at its width) are reported beside
    that, scaled to the real width, but never added to the peak: they were never checked at the real width
    or on a GPU. ``headroom``: the share of the card to plan for.
    """
    spec = hardware.get_gpu(gpu)
    budget = spec.memory_gib * fraction(headroom, "headroom")
    max_text_tokens = max_text_tokens or value("indextts2.max_text_tokens_per_segment")
    positive(max_text_tokens, "max_text_tokens", integer=True)
    positive(tokens_per_s, "tokens_per_s")
    if activations is not None and (not isinstance(measured, Measurements)
                                    or not measured.select("steps", precision="float32", offload=False)):
        raise ValueError("activations need the sweep they were measured beside (its width): pass "
                         "measured=lesson.claims_sweep(...), or leave activations out")
    steps = value("indextts2.diffusion_steps")
    usable = hardware.pick_dtype(spec) != "float32" and hardware.resolve_dtype("float16", spec).dtype == "float16"
    gpt_dtype = "float16" if usable else "float32"  # by compute capability: use_fp16 gives float16, never bf16
    fp32, fp16 = indextts2_total_gb("float32", emotion), indextts2_total_gb("float16", emotion)
    reasons = [f"a prediction: this project has not run IndexTTS-2 on {spec.name}. On the card, watch "
               f"torch.cuda.max_memory_reserved() after the first utterance, or the runner's '{RUNNER_LOG}' "
               "line (total_peak_gib), against the planned peak"]
    reasons.append(f"GPT in {gpt_dtype}: " + (f"use_fp16=True; IndexTTS-2 halves only its GPT, {fp32:.2f} -> "
                   f"{fp16:.2f} GB (cited, PR #755), and its authors report a very small quality loss"
                   if gpt_dtype == "float16" else f"{spec.name} has no usable float16"))
    reasons.append(f"s2mel stage in float32 as IndexTTS-2 runs it; {steps} steps, its fixed setting (cited: "
                   f"{cited('indextts2.diffusion_steps').source}): steps cost time, not memory (measured on "
                   "the stand-in, section 2)")
    weights = {k: b for k, (b, _) in stage_weights().items()}
    if gpt_dtype == "float16":
        weights["GPT (UnifiedVoice)"] /= 2
    total = (fp16 if gpt_dtype == "float16" else fp32) * GB
    rest = max(0.0, total - sum(weights.values()))
    reasons.append(f"the stages' weights are {sum(weights.values()) / GIB:.2f} GiB of IndexTTS-2's cited peak "
                   f"{total / GIB:.2f} GiB ({'with' if emotion else 'without'} QwenEmotion, RTX 4090); the other "
                   f"{rest / GIB:.2f} GiB (QwenEmotion, activations, CUDA context) stays in every plan")
    chunk_s = max_text_tokens / tokens_per_s
    gpt_spec = ModelSpec.known("indextts2-gpt")
    kv_tokens = max_text_tokens + round(chunk_s * INDEXTTS2_TOKENS_PER_SECOND)
    kv = kv_bytes_per_token(gpt_spec, gpt_dtype) * kv_tokens
    reasons.append(f"counted: the GPT's KV cache for one {max_text_tokens}-token segment, {max_text_tokens} text + "
                   f"~{kv_tokens - max_text_tokens} semantic tokens ({max_text_tokens} text tokens at an assumed "
                   f"{tokens_per_s:g} per second of speech = ~{chunk_s:g} s, x {INDEXTTS2_TOKENS_PER_SECOND:g} "
                   f"semantic tokens per second) = {kv / GIB:.3f} GiB in {gpt_dtype} (predicted by count from its "
                   "config; the cited run's text length is not stated, so part of it may be counted twice)")
    not_counted = ("not counted: s2mel activations for a segment longer than the cited run's text (its length "
                   "is not stated)")
    if activations is not None:
        dit_scale = INDEXTTS2_DIT.hidden / measured.dit_config.hidden
        voc_scale = BIGVGAN_V2_22K.channels / measured.vocoder_config.channels
        act = max(activations["dit"] * dit_scale, activations["vocoder"] * voc_scale) * chunk_s * MIB
        not_counted += (f"; the stand-in's, scaled by width x{dit_scale:g} / x{voc_scale:g} from a run at reduced "
                        f"width, suggest ~{act / GIB:.2f} GiB for such a segment: never checked at the real width "
                        f"or on a GPU, so left out of the peak (that run: {measured.where})")
    reasons.append(not_counted)
    resident = (total + kv) / GIB
    largest = max(weights, key=weights.get)
    offloaded = (weights[largest] + rest + kv) / GIB
    extra = 0.0
    if resident <= budget:
        offload, peak = False, resident
        reasons.append(f"everything resident: ~{resident:.2f} GiB fits the {budget:.2f} GiB planned "
                       f"({headroom:.0%} of {spec.memory_gib:.2f} GiB): no offload")
    else:
        offload, peak = True, offloaded
        moved = sum(weights.values())
        extra = 2 * moved / (PCIE3_X16_GBS * GB)
        reasons.append(f"resident needs ~{resident:.2f} GiB > {budget:.2f} GiB: one stage at a time, peak "
                       f"~{offloaded:.2f} GiB (largest stage: {largest}); at least ~{extra:.2f} s per utterance to "
                       f"copy {moved / GIB:.1f} GiB in and out at PCIe 3.0 x16's {PCIE3_X16_GBS:.2f} GB/s (predicted)")
        if offloaded > budget:
            reasons.append(f"even one stage at a time needs ~{offloaded:.2f} GiB: {spec.name} is too small")
    reasons.append(f"text in segments of {max_text_tokens} tokens (IndexTTS-2's default): the peak follows the "
                   "longest segment, not the text (measured on the stand-in, section 6)")
    settings = {"use_fp16": gpt_dtype == "float16", "use_qwen_emo": emotion, "offload_idle_stages": offload,
                "diffusion_steps": steps, "max_text_tokens_per_segment": max_text_tokens}
    return Recipe(spec.name, round(budget, 2), gpt_dtype, "float32", steps, max_text_tokens, offload,
                  round(peak, 2), round(extra, 2), reasons, settings=settings)


def settings_8gb(detected, card_8gb, simulated: bool = False) -> str:
    """Notebook 03's answer: the 8 GB recipe in full (for ``detected`` itself when it is an 8 GB card or
    smaller, else for ``card_8gb``, run on ``detected`` under the cap), then what the same plan gives on
    ``detected``. "8 GB" is ``hardware.memory_class_gb`` 8; ``card_8gb`` of another class is a ValueError."""
    detected, card_8gb = hardware.get_gpu(detected), hardware.eight_gb_card(card_8gb)
    eight = detected if hardware.memory_class_gb(detected) <= 8 else card_8gb
    lines = [str(recommend_8gb(eight))]
    if eight is not detected:
        where = "the simulated GPU" if simulated else "this GPU"
        lines += ["", f"the command runs the {eight.name} plan on {where} too: the cap emulates its memory. "
                      f"On {where} without a cap:", str(recommend_8gb(detected)).splitlines()[0]]
    return "\n".join(lines)
