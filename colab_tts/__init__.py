"""colab-tts: deploy open-source TTS models on a Colab T4 and 8 GB GPUs, and make them fit and run fast.

One module per concern; importing the package itself loads nothing heavy:

- ``hardware``: the GPU catalog, dtype choice (bf16 -> fp16 on a T4), detection, the decode roofline
- ``models``, ``kv_cache``, ``kv_probe``: model shapes, the vLLM KV-cache planner, real-vLLM checks
- ``orpheus``, ``orpheus_demo``, ``snac_decode``, ``audio``: Orpheus-TTS end to end, SNAC decoding, Speech
- ``t2s``, ``decoding``: the GPT-SoVITS GPT stage and its decode loop (caches, batching, precision)
- ``flow``, ``memory``, ``text``: the flow-matching stage on 8 GB, peak memory and offloading, text chunks
- ``widgets``, ``errors``, ``display``, ``plots``, ``cli``: panels, OOM advice, tables, plots, the CLI
"""

__version__ = "0.1.0"
