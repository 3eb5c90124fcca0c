"""Out-of-memory on the GPU, a full disk and a gated model turned into advice instead of a traceback.

``with oom_advice("synthesis", ["lower max_model_len to 4096", ...]):`` re-raises a CUDA
out-of-memory error (torch.cuda.OutOfMemoryError, or a RuntimeError saying "out of memory") as one
``OutOfMemoryAdvice`` that says what ran out and what to change. Other errors pass through.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from contextlib import contextmanager


class OutOfMemoryAdvice(MemoryError):
    """The GPU ran out of memory; the message lists what to change, most effective first."""

    def __init__(self, stage: str, advice: Iterable[str]):
        self.stage, self.advice = stage, list(advice)
        tips = "".join(f"\n  - {a}" for a in self.advice) or "\n  - free memory held by other objects"
        super().__init__(f"{stage} ran out of GPU memory. Try:{tips}")


def is_out_of_memory(err: BaseException) -> bool:
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


@contextmanager
def oom_advice(stage: str, advice: Iterable[str] | Callable[[], Iterable[str]]):
    """Turn an out-of-memory error inside the block into ``OutOfMemoryAdvice``.

    ``advice`` may be a callable, so that the planner is only asked when memory really ran out.
    """
    try:
        yield
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        tips = advice() if callable(advice) else advice
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
        raise OutOfMemoryAdvice(stage, tips) from None


class GatedModelError(PermissionError):
    """A gated Hugging Face repository refused the download; the message lists the steps to get access."""

    def __init__(self, repo_id: str, has_token: bool, alternative: str | None = None):
        self.repo_id, self.has_token, self.alternative = repo_id, has_token, alternative
        why = ("the token found has not been granted access to it" if has_token else
               "no Hugging Face token was found (Colab secret HF_TOKEN, $HF_TOKEN, or huggingface_hub.login())")
        steps = [
            f"open https://huggingface.co/{repo_id}, log in and accept the model's terms",
            "create a token with read access at https://huggingface.co/settings/tokens",
            "on Colab add it as a secret named HF_TOKEN (key icon in the left bar, notebook access on): "
            "huggingface_hub.get_token() reads it; elsewhere set $HF_TOKEN or run huggingface_hub.login()",
            "run the loading cell again",
        ]
        text = "".join(f"\n  {i}. {s}" for i, s in enumerate(steps, 1))
        if alternative:
            text += f"\n  Or load a copy that is not gated: {alternative}"
        super().__init__(f"{repo_id} is gated on the Hugging Face Hub and {why}. To get access:{text}")

    def _render_traceback_(self) -> list[str]:
        """What IPython (Jupyter, Colab) shows instead of a traceback: the message with its steps, nothing else."""
        return [f"{type(self).__name__}: {self}"]


class DiskFullError(OSError):
    """Not enough disk for a download or a write: what needs how many bytes, how many are free, where to free.

    ``needed`` may be None when the writer hit ENOSPC without a known total (then only ``free`` is shown).
    """

    def __init__(self, what: str, folder, needed: int | None, free: int, free_up: Iterable[str] = ()):
        from .units import GIB

        self.what, self.folder, self.needed, self.free = what, str(folder), needed, free
        self.free_up = list(free_up)
        need = f"needs {needed / GIB:.2f} GiB ({needed:,} bytes)" if needed is not None else "ran out of disk"
        tips = "".join(f"\n  - {t}" for t in self.free_up)
        super().__init__(errno.ENOSPC, f"{what} {need}; {self.folder} has {free / GIB:.2f} GiB ({free:,} bytes) "
                                       f"free. Free space, then run the cell again:{tips}")

    def __str__(self) -> str:
        return self.strerror

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno == errno.ENOSPC
