"""colab-tts: deploy open-source TTS models on a Colab T4 and 8 GB GPUs, and make them fit and run fast.

The runtime, one module per concern; importing the package itself loads nothing heavy:

- ``hardware``, ``dtypes``, ``devices``, ``units``, ``cited``: the GPU catalog and dtype choice (bf16 -> fp16 below CC 8.0),
  one way to name and wait for a device, units, and every typed figure with its public source (``data/cited``)
- ``colab``, ``colab_release``, ``selftest``: Colab detection, the vLLM install with its GPU check, restart and fall-back; every
  CUDA path once with a pass/fail table
- ``models``, ``kv_cache`` (the public face of ``vllm_plan``, ``planner`` and ``kv_fit``; ``vllm_versions``: vLLM
  0.6.4-0.32.0 modelled), ``quantization``, ``systems``, ``plan_table``, ``kv_probe``: model shapes, the vLLM KV-cache planner, quantized
  weight bytes and vLLM's CC rules, the settings that fit (``fit_vllm``), whether each TTS system fits a GPU
  by that plan, real-vLLM checks
- ``orpheus``, ``orpheus_engines``, ``orpheus_demo``, ``snac_decode``, ``snac_official``, ``hub``, ``audio``:
  Orpheus-TTS end to end (vLLM or transformers), gated weights, SNAC decoding, Speech
- ``t2s``, ``t2s_runner``, ``decoding``, ``decode_caches``, ``precision``, ``compiled``: the GPT-SoVITS GPT
  stage (model + checkpoint), prompt assembly and buckets, the decode loop and sampler, KV caches,
  dtype/int8, the compiled step
- ``flow_model``, ``flow``, ``memory``, ``text``: the flow-matching stage (DiT and vocoder; sampler and
  FlowTTS), peak memory and offloading, text chunks
- ``widgets``, ``errors``, ``display``, ``plots``, ``cli``: panels, OOM, full-disk and gated-model advice, tables,
  notebook 00's plots, the CLI
- ``deploy``: real GPT-SoVITS / IndexTTS-2 / MetaVoice runs in their own environments
  (``python -m colab_tts.deploy SYSTEM --dry-run``)

``colab_tts.lessons`` holds what the notebooks measure, judge and draw (one module per notebook); no
runtime module imports it.
"""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("COLAB_TTS_VLLM_CPU_LIBRARY", "").strip():  # take another CPU family's vLLM kernels (vllm_cpu)
    from .vllm_cpu import force_kernel_library_from_env as _force
    from .vllm_cpu import warn_at_importer as _warn

    try:
        _force()
    except ValueError as _refused:  # raised again by name where vLLM starts (kv_probe) and where the tests begin;
        _warn(str(_refused))  # failing the import here would break the CLI and every notebook cell
