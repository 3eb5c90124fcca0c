"""colab-tts: deploy open-source TTS models on a Colab T4 and 8 GB GPUs, and make them fit and run fast.

Modules, one concern each: ``hardware`` (GPU catalog, dtypes, detection), ``display`` (tables,
output files). Import what you need from them; importing the package itself loads nothing heavy.
"""

__version__ = "0.1.0"
