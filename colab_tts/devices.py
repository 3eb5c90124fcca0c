"""Where tensors run: one way to name a device, wait for it, and show progress on long work."""

from __future__ import annotations

import torch


def accelerator() -> torch.device:
    """cuda when a GPU is visible, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device=None) -> torch.device:
    """``None`` -> the accelerator; a name or torch.device -> that device, with a clear error otherwise."""
    if device is None:
        return accelerator()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:0' or a torch.device, got {device!r}") from None


def sync(device) -> None:
    """Wait for queued GPU work, so that a timer around it measures the work and not the launch."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress(items, desc: str, show: bool = True, total: int | None = None):
    """A notebook-friendly progress bar (tqdm.auto) around ``items``; ``show=False`` returns them as they are."""
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False)
