"""The vLLM release the notebooks install on Colab, in one home below both of its readers.

``colab`` installs it; ``vllm_versions`` plans for it by default (``COLAB_VLLM``). Standard library only, so
the Colab install cell can import it before anything is installed.
"""

VLLM_VERSION = "0.25.1"
VLLM_CUDA = "cu129"
