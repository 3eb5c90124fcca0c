"""The tiny flow-stage shapes the tests share (a module of its own: tests/ and notebooks/ each have a conftest.py,
so ``from conftest import ...`` gets whichever pytest imported last)."""

from colab_tts import flow

TINY_DIT = flow.DiTConfig(hidden=32, heads=2, depth=3, content_dim=16, style_dim=8, wavenet_layers=1)
TINY_VOCODER = flow.VocoderConfig(channels=32, upsample_rates=(4, 4), upsample_kernels=(8, 8), resblock_kernels=(3,))
