"""Notebook 03's measurements: which device and size to run on, the harness, and the sweeps.

``setup`` picks the device (the detected GPU, else this CPU), the model size and the half
precisions to compare - on a GPU through ``hardware.resolve_dtype`` on its compute capability, so a
T4 never gets an emulated bfloat16 row. Every result is a ``Measurements`` that carries where it
was measured (``where``), which the verdicts in ``diffusion_8gb`` repeat beside each figure.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

import torch

from colab_tts import hardware
from colab_tts._checks import choose, positive
from colab_tts.devices import progress as progress_bar
from colab_tts.devices import resolve_device, sync
from colab_tts.display import Table
from colab_tts.errors import oom_advice
from colab_tts.flow import FLOW_OOM_ADVICE, FlowInputs, make_inputs, sample, speech_seconds, synthesize
from colab_tts.flow_model import (
    BIGVGAN_V2_22K,
    INDEXTTS2_DIT,
    PRECISIONS,
    SMALL_DIT,
    SMALL_VOCODER,
    DiT,
    DiTConfig,
    Vocoder,
    VocoderConfig,
    param_count,
    to_precision,
)
from colab_tts.memory import module_bytes, to_accelerator, to_host, track_peak
from colab_tts.text import split_text
from colab_tts.units import MIB

HALF_PRECISIONS = ("float16", "bfloat16")


# --- where the lesson runs ------------------------------------------------------------------------

def where_measured(device, dit_config: DiTConfig | None = None, gpu: hardware.GpuSpec | None = None) -> str:
    """'measured in this run on ...': the device, the model width and that the weights are random."""
    device = torch.device(device)
    if device.type == "cuda":
        name = gpu.name if gpu is not None else torch.cuda.get_device_name(device)
        place = f"on {name} (CUDA)"
    else:
        place = f"on this CPU ({platform.machine() or 'cpu'}, {torch.get_num_threads()} thread(s))"
    size = ""
    if dit_config is not None:
        size = ("; real size (DiT hidden %d)" if dit_config.hidden == INDEXTTS2_DIT.hidden
                else "; reduced width (DiT hidden %d)") % dit_config.hidden
    return f"measured in this run {place}{size}; random weights"


@dataclass
class Setup:
    """Where notebook 03 runs and what it compares there."""

    device: torch.device
    gpu: hardware.GpuSpec | None  # the detected GPU; without one, the simulated GPU the plans are for
    simulated: bool
    real_size: bool
    precisions: tuple[str, ...]  # the half precisions measured beside float32
    notes: list[str] = field(default_factory=list)

    @property
    def dit_config(self) -> DiTConfig:
        return INDEXTTS2_DIT if self.real_size else SMALL_DIT

    @property
    def vocoder_config(self) -> VocoderConfig:
        return BIGVGAN_V2_22K if self.real_size else SMALL_VOCODER

    @property
    def gpu_label(self) -> str:
        """The GPU in plot titles and plans: the detected one, or the simulated one marked as such."""
        if self.gpu is None:
            return "no GPU"
        return f"{self.gpu.name} (simulated: no GPU here)" if self.simulated else self.gpu.name

    @property
    def where(self) -> str:
        return where_measured(self.device, self.dit_config, None if self.simulated else self.gpu)

    def __str__(self) -> str:
        c = self.dit_config
        lines = [f"device: {self.device}; {self.where}",
                 f"DiT hidden {c.hidden}, depth {c.depth}; vocoder width {self.vocoder_config.channels}",
                 f"planning for: {self.gpu_label}",
                 f"half precisions measured beside float32: {', '.join(self.precisions) or 'none'}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def setup(simulate_gpu="T4", real_size: bool | None = None, cpu_threads: int = 1) -> Setup:
    """The device, size and precisions for notebook 03.

    On a GPU: that GPU (``simulate_gpu`` is ignored), the real size, and each half precision the GPU
    supports by compute capability (``hardware.resolve_dtype``; never ``torch.cuda.is_bf16_supported``,
    which answers True on a T4 by emulation). Without one: this CPU at a reduced width, both half
    precisions (their speed here is a CPU effect), and ``simulate_gpu`` for the plans.
    """
    positive(cpu_threads, "cpu_threads", integer=True)
    report = hardware.detect(simulate=simulate_gpu)
    notes = []
    if report.has_gpu:
        device, gpu = torch.device("cuda"), report.gpu
        precisions = []
        for p in HALF_PRECISIONS:
            choice = hardware.resolve_dtype(p, gpu)
            if choice.dtype != p:
                notes.append(f"no {p} row: {choice.reason}")
            elif p not in precisions:
                precisions.append(p)
    else:
        device, gpu = torch.device("cpu"), report.gpu
        torch.set_num_threads(cpu_threads)
        precisions = list(HALF_PRECISIONS)
        notes.append("no GPU: float16 and bfloat16 both run on this CPU, where their speed says nothing about a "
                     "GPU's" + (f"; plans are for the simulated {gpu.name}" if gpu is not None else ""))
    real = report.has_gpu if real_size is None else bool(real_size)
    return Setup(device, gpu, not report.has_gpu and gpu is not None, real, tuple(precisions), notes)


# --- the harness ----------------------------------------------------------------------------------

@dataclass
class Measurements:
    """Rows measured in one run, with where they were measured (``where``) and the model sizes."""

    rows: list[dict]
    where: str
    dit_config: DiTConfig | None = None
    vocoder_config: VocoderConfig | None = None

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def weights_mib(self, real: bool = False) -> dict:
        """fp32 weights of each stage, as measured (``real=False``) or at the real size."""
        dit, voc = (INDEXTTS2_DIT, BIGVGAN_V2_22K) if real else (self.dit_config, self.vocoder_config)
        return {"dit": param_count(dit) * 4 / MIB, "vocoder": param_count(voc) * 4 / MIB}

    def table(self, title: str | None = None, digits: int = 3) -> Table:
        return Table(self.rows, title=f"{title} ({self.where})" if title else self.where, digits=digits)

    def select(self, part: str | None = None, **match) -> list[dict]:
        """Rows matching ``match``; with ``part``, only that part of a ``claims_sweep`` (plain sweeps have none)."""
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())
                and (part is None or r.get("part", part) == part)]


Sweep = Measurements  # the name the sweep functions' results had before


def measure(fn, device=None, separate_timing: bool = True):
    """(result, seconds, peak MiB) of ``fn()``. On the CPU the peak comes from a separate, tracked run
    (the storage counter slows small ops down); ``separate_timing=False`` times the tracked run itself,
    which is fine where each op is large (the real-size model) and halves the time spent."""
    device = resolve_device(device)
    if device.type == "cuda" or not separate_timing:
        sync(device)
        start = time.perf_counter()
        with track_peak(device) as mem:
            out = fn()
        sync(device)
        return out, time.perf_counter() - start, mem.peak_mib
    with track_peak(device) as mem:  # first: it also warms up (first-call costs stay out of the timing)
        fn()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, mem.peak_mib


def measure_pipeline(dit: DiT, vocoder: Vocoder, inputs: FlowInputs, steps: int, cfg_rate: float = 0.7,
                     offload: bool = False, device=None, separate_timing: bool = True):
    """(mel, waveform, seconds, peak MiB) of one ``synthesize`` call, the weights on the device included.

    Resident (no offload): the stages are on the device before the timed call, as they are for every
    utterance after the first; their bytes are added to the measured peak. Offload: they start in
    host memory and each call copies them in, which the peak and the time both include.
    """
    device = resolve_device(device)
    resident_mib = 0.0
    if not offload:
        to_accelerator(dit, device)
        to_accelerator(vocoder, device)
        resident_mib = (module_bytes(dit) + module_bytes(vocoder)) / MIB
    try:
        (mel, wav), seconds, peak = measure(lambda: synthesize(dit, vocoder, inputs, steps, cfg_rate, offload, device),
                                            device, separate_timing)
    finally:
        to_host(dit)
        to_host(vocoder)
    return mel, wav, seconds, peak + resident_mib


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS(x - reference) / RMS(reference): numerical deviation, not a measure of audio quality."""
    x, reference = x.float().cpu(), reference.float().cpu()
    return float((x - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt().clamp_min(1e-12))


def reference_mel(dit: DiT, inputs: FlowInputs, steps: int = 200, cache: dict | None = None, device=None):
    """The fp32 ``steps``-step solution that errors are measured against; computed once per input."""
    key = (id(dit), steps, inputs.target_frames, inputs.prompt_frames, float(inputs.noise.sum()))
    if cache is not None and key in cache:
        return cache[key]
    device = resolve_device(device)
    with torch.no_grad():
        to_accelerator(dit, device)
        try:
            mel = sample(dit, inputs.to(device), steps).cpu()
        finally:
            to_host(dit)
    if cache is not None:
        cache[key] = mel
    return mel


def sweep(dit: DiT, vocoder: Vocoder, *, steps=(25,), precisions=("float32",), offload=(False,),
          target_frames=(64,), prompt_frames: int = 32, cfg_rate: float = 0.7, reference_steps: int = 200,
          references: dict | None = None, device=None, progress: bool = True, seed: int = 0,
          separate_timing: bool = True) -> Measurements:
    """Run the whole s2mel stage (sampler + vocoder) over a grid; one row per configuration.

    Columns: steps, precision, offload, frames (target mel frames: the chunk length), audio_s,
    latency_s, peak_mib, error (relative RMS deviation from the fp32 ``reference_steps``-step mel).
    """
    device = resolve_device(device)
    references = {} if references is None else references
    precisions = [choose(hardware.dtype_name(p), PRECISIONS, "precision") for p in precisions]
    grid = [(n, s, p, o) for n in target_frames for p in precisions for o in offload for s in steps]
    rows, models = [], {}
    for frames, n_steps, precision, off in progress_bar(grid, "sweep", progress):
        inputs = make_inputs(dit.config, frames, prompt_frames, seed)
        ref = reference_mel(dit, inputs, reference_steps, references, device)
        if precision not in models:
            models[precision] = (dit, vocoder) if precision == "float32" else (
                to_precision(dit, precision), to_precision(vocoder, precision))
            synthesize(*models[precision], inputs, 1, cfg_rate, True, device)  # warm-up: first calls are slow
        d, v = models[precision]
        with oom_advice(f"the sweep at {n_steps} steps, {precision}, offload={off}, {frames} frames",
                        FLOW_OOM_ADVICE):
            mel, wav, seconds, peak = measure_pipeline(d, v, inputs, n_steps, cfg_rate, off, device,
                                                       separate_timing)
        rows.append({"steps": n_steps, "precision": precision, "offload": off, "frames": frames,
                     "audio_s": wav.shape[-1] / vocoder.config.sample_rate, "latency_s": seconds,
                     "peak_mib": peak, "error": relative_error(mel, ref)})
    return Measurements(rows, where_measured(device, dit.config), dit.config, vocoder.config)


def claims_sweep(dit: DiT, vocoder: Vocoder, steps=(10, 25, 50), at_steps: int = 25,
               precisions=HALF_PRECISIONS, **kwargs) -> Measurements:
    """The circulated table: fp32 over ``steps`` (part "steps"), then at ``at_steps`` fp32, the half
    precisions and offload on, measured one after another (part "variants").

    On a shared machine the speed drifts over minutes, so each comparison uses rows measured side by
    side: fp32 at ``at_steps`` is measured in both parts. One 200-step reference per input serves all.
    ``kwargs`` go to ``sweep``.
    """
    kwargs.setdefault("references", {})
    result = sweep(dit, vocoder, steps=steps, **kwargs)
    more = sweep(dit, vocoder, steps=(at_steps,), precisions=tuple(dict.fromkeys(("float32", *precisions))),
                 offload=(False, True), **kwargs)
    for part, rows in (("steps", result.rows), ("variants", more.rows)):
        for r in rows:
            r["part"] = part
    result.rows += more.rows
    return result


def trajectory_peaks(dit: DiT, steps=(10, 25, 50), target_frames: int = 64, prompt_frames: int = 32,
                     device=None) -> Measurements:
    """Peak MiB of the sampler alone, without and with ``keep_trajectory``, for each step count."""
    device = resolve_device(device)
    inputs = make_inputs(dit.config, target_frames, prompt_frames).to(device)
    rows = []
    to_accelerator(dit, device)
    try:
        for n in steps:
            row = {"steps": n}
            for keep in (False, True):
                with track_peak(device) as mem:
                    sample(dit, inputs, n, keep_trajectory=keep)
                row["peak_mib_trajectory" if keep else "peak_mib"] = mem.peak_mib
            rows.append(row)
    finally:
        to_host(dit)
    return Measurements(rows, where_measured(device, dit.config), dit.config)


def checkpointing_peaks(dit: DiT, target_frames: int = 64, prompt_frames: int = 32, device=None) -> Measurements:
    """Peak MiB of one estimator call with gradient checkpointing off/on, under no_grad and with grad."""
    device = resolve_device(device)
    inputs = make_inputs(dit.config, target_frames, prompt_frames).to(device)
    t = torch.full((1,), 0.5, device=device)
    args = (inputs.noise, torch.zeros_like(inputs.noise), t, inputs.style, inputs.cond)
    rows = []
    to_accelerator(dit, device)
    try:
        for grad in (False, True):
            for ckpt in (False, True):
                dit.enable_gradient_checkpointing(ckpt)
                with torch.set_grad_enabled(grad), track_peak(device) as mem:
                    out = dit(*args)
                del out
                rows.append({"grad": grad, "checkpointing": ckpt, "peak_mib": mem.peak_mib})
    finally:
        dit.enable_gradient_checkpointing(False)
        to_host(dit)
    return Measurements(rows, where_measured(device, dit.config), dit.config)


def chunk_sweep(dit: DiT, vocoder: Vocoder, texts: dict, max_tokens=(40, 120, None), *, steps: int = 10,
                tokens_per_s: float = 4.0, prompt_frames: int = 32, device=None, progress: bool = True,
                separate_timing: bool = True) -> Measurements:
    """Peak memory and time to synthesise long texts split into chunks of at most ``max_tokens``.

    Each chunk's length in mel frames is its token count / ``tokens_per_s`` seconds of speech at the
    vocoder's frame rate (an assumed speaking rate, stated in the rows); ``None`` means no split.
    Peak is the largest over the chunks (they run one after another); latency is the sum.
    """
    positive(tokens_per_s, "tokens_per_s")
    device = resolve_device(device)
    fps = vocoder.config.frames_per_s
    rows = []
    for name, text in texts.items():
        for limit in progress_bar(max_tokens, name, progress):
            chunks = split_text(text, limit) if limit else [text.strip()]
            frames = [max(1, round(speech_seconds(c, tokens_per_s) * fps)) for c in chunks]
            peak, seconds = 0.0, 0.0
            for n in frames:
                inputs = make_inputs(dit.config, n, prompt_frames)
                *_, s, p = measure_pipeline(dit, vocoder, inputs, steps, device=device, separate_timing=separate_timing)
                peak, seconds = max(peak, p), seconds + s
            rows.append({"text": name, "max_tokens": limit or "no split", "chunks": len(chunks),
                         "longest_s": max(frames) / fps, "total_s": sum(frames) / fps,
                         "latency_s": seconds, "peak_mib": peak})
    return Measurements(rows, where_measured(device, dit.config), dit.config, vocoder.config)


def stage_activations(dit: DiT, vocoder: Vocoder, target_frames: int = 64, prompt_frames: int = 32,
                      steps: int = 4, device=None) -> dict:
    """Activation peak (weights already on the device, not counted) of each stage, in MiB per second of audio."""
    device = resolve_device(device)
    inputs = make_inputs(dit.config, target_frames, prompt_frames).to(device)
    audio_s = target_frames / vocoder.config.frames_per_s
    out = {}
    for name, module in (("dit", dit), ("vocoder", vocoder)):
        to_accelerator(module, device)
        try:
            with torch.no_grad(), track_peak(device) as mem:
                if name == "dit":
                    mel = sample(dit, inputs, steps)
                else:
                    vocoder(mel)
        finally:
            to_host(module)
        out[name] = mem.peak_mib / audio_s
    return out
