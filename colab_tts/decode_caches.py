"""KV caches for the decode loop, one class per strategy; each is passed into ``T2SModel.prefill`` / ``decode_step``.

- ``ConcatCache``: the upstream cache (``torch.cat`` every step), the baseline.
- ``StaticCache``: allocated once, written in place; ``fixed_shape=True`` makes every decode step the same
  shape, which torch.compile and CUDA graphs need.
- ``NoCache``: recompute the whole sequence every step (for teaching what a cache saves).

The interface: ``update(layer, k, v) -> (k, v)`` to attend over, ``advance(n)`` after a pass, ``keep(rows)``
when finished rows leave the batch, ``length`` = positions written.
"""

from __future__ import annotations

import torch

from . import hardware

CACHES = ("concat", "static", "none")


class ConcatCache:
    """The upstream cache: every step allocates a new K/V one position longer (``torch.cat``), as
    ``decode_next_token`` does in RVC-Boss/GPT-SoVITS GPT_SoVITS/AR/models/t2s_model.py @48b1a01."""

    def __init__(self, n_layer: int):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.length = 0

    def update(self, layer, k, v):
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, n: int):
        self.length += n

    def keep(self, rows):
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]


class StaticCache:
    """K/V buffers allocated once for ``max_len`` positions and written in place.

    By default ``update`` returns views up to the current length (no copies, least attention work).
    ``fixed_shape=True`` returns the whole buffers (positions not yet written are masked by the
    caller) and writes one step at the tensor ``write_pos``: every decode step has the same shapes,
    which is what torch.compile and CUDA graphs need.
    """

    def __init__(self, n_layer, batch, n_head, max_len, head_dim, dtype=torch.float32, device="cpu",
                 fixed_shape: bool = False):
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.batch, self.max_len, self.length, self.fixed_shape = batch, max_len, 0, fixed_shape
        self.write_pos = torch.zeros(1, dtype=torch.long, device=device)
        if fixed_shape:  # CUDA graphs may only mutate tensors at fixed addresses (as HF's StaticCache does)
            for t in self.k + self.v + [self.write_pos]:
                torch._dynamo.mark_static_address(t)

    @classmethod
    def for_model(cls, model, batch: int, max_len: int, fixed_shape: bool = False, dtype=None):
        """Buffers sized from ``model.config`` (n_layer, n_head, head_dim), on the model's device and dtype."""
        c = model.config
        dtype = model.dtype if dtype is None else hardware.torch_dtype(dtype)
        return cls(c.n_layer, batch, c.n_head, max_len, c.head_dim, dtype, model.device, fixed_shape)

    def update(self, layer, k, v):
        if self.fixed_shape and k.shape[2] == 1:  # decode steps; the prefill below stays eager
            self.k[layer].index_copy_(2, self.write_pos, k)
            self.v[layer].index_copy_(2, self.write_pos, v)
            return self.k[layer], self.v[layer]
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"StaticCache holds {self.max_len} positions; {end} needed. Allocate a larger max_len.")
        b = self.batch
        self.k[layer][:b, :, self.length:end] = k
        self.v[layer][:b, :, self.length:end] = v
        return self.k[layer][:b, :, :end], self.v[layer][:b, :, :end]

    def advance(self, n: int):
        self.length += n
        self.write_pos.fill_(self.length)

    def keep(self, rows):
        # Compact surviving rows to the front of the same buffers: no reallocation, and only the
        # positions written so far are copied.
        n = self.length
        for buf in self.k + self.v:
            buf[: len(rows), :, :n] = buf[: self.batch, :, :n].index_select(0, rows)
        self.batch = len(rows)


class NoCache:
    """No cache at all: every step recomputes the whole sequence (quadratic; shows what a cache buys)."""

    length = 0

    def update(self, layer, k, v):
        return k, v

    def advance(self, n: int):
        pass

    def keep(self, rows):
        pass
