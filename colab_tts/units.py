"""Units, defined once. Memory is shown in GiB (what PyTorch and vLLM report); GB only when quoting a source."""

KIB = 1024
MIB = 1024**2
GIB = 1024**3
GB = 10**9


def gib(n_bytes: float) -> float:
    """Bytes -> GiB."""
    return n_bytes / GIB


def mib(n_bytes: float) -> float:
    """Bytes -> MiB."""
    return n_bytes / MIB
