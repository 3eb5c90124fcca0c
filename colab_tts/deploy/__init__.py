"""Real deployments, each in its own environment: ``python -m colab_tts.deploy SYSTEM ...``.

GPT-SoVITS, IndexTTS-2 and MetaVoice-1B pin their own Python and libraries (3.10-3.11, numpy < 2,
transformers < 5, torch 2.2-2.8), which clash with Colab's image. So each runs in an environment of
its own (uv), with upstream cloned at a pinned commit and this package on ``PYTHONPATH`` beside it;
the notebook's kernel never imports upstream code. It calls the runner, which

1. builds the *plan* (``systems``): upstream repo + commit, Python, install commands, weights, and
   the upstream calls with exactly the kwargs the worker will pass (``--dry-run`` prints it);
2. makes the environment, clones, installs from the system's committed lock (``lockfile``, ``locks/``),
   downloads the weights, each checked by size and sha256 (``env``, ``download``, ``weights``);
3. runs ``colab_tts.deploy.worker`` in that environment: the calls, the technique under study,
   timing and ``track_peak`` per call and per stage, audio written to wav (``worker`` and the
   per-system modules ``gpt_sovits``, ``indextts2``, ``metavoice``);
4. reads back ``result.json`` and the audio (``protocol``).

Importing this package loads nothing heavy (no torch).
"""

from .protocol import read_result, read_wav
from .systems import SYSTEMS, get_system, plan, settings

__all__ = ["SYSTEMS", "get_system", "plan", "settings", "read_result", "read_wav", "deploy"]


def deploy(*args, **kwargs):
    """Run a system for real (see ``colab_tts.deploy.env.deploy``)."""
    from .env import deploy as _deploy

    return _deploy(*args, **kwargs)
