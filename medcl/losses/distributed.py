"""All-gather helpers so that a loss sees the global batch under ``torch.distributed``.

Gradient convention (DDP). With ``gather=True`` every rank gathers z from all ranks, computes the
loss on the global batch and returns it *unscaled*: the value is the single-process loss on the
concatenated batch and is identical on every rank. The backward of the autograd all-gather sums,
over ranks, the gradients that each rank's copy of the global loss sends to a shard, so the
gradient reaching rank r's own shard z_r is ``world_size * dL/dz_r``. DDP then *averages* the
parameter gradients over the ``world_size`` ranks, which cancels that factor exactly: the
averaged gradient equals the single-process gradient on the concatenated batch. (Do not divide
the loss by ``world_size`` yourself, and do not use these helpers with a sum-reducing gradient
synchronisation, which would give ``world_size`` times the single-process gradient.)

Without an initialised process group every function here is the identity. Batches may have
different sizes on different ranks (e.g. a last incomplete batch): shards are padded to the
largest size for the collective and the padding is removed afterwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks of the default group (1 without an initialised group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without an initialised group)."""
    return dist.get_rank() if is_distributed() else 0


def _shard_sizes(x: torch.Tensor) -> list[int]:
    size = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x.contiguous()
    pad = x.new_zeros((rows - x.shape[0], *x.shape[1:]))
    return torch.cat([x, pad], dim=0)


def _unpad(chunks: list[torch.Tensor] | tuple[torch.Tensor, ...], sizes: list[int]) -> torch.Tensor:
    return torch.cat([c[:s] for c, s in zip(chunks, sizes, strict=True)], dim=0)


def _autograd_all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    """All-gather along dim 0 with a gradient (summed over ranks in backward)."""
    try:  # private but maintained API; the public one below is deprecated in recent torch
        from torch.distributed._functional_collectives import all_gather_single_autograd

        out = all_gather_single_autograd(x, 0, dist.group.WORLD)
        return list(out.chunk(dist.get_world_size(), dim=0))
    except (ImportError, AttributeError, NotImplementedError, RuntimeError):
        import warnings

        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return list(all_gather(x))


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (rows = subjects) from every rank, in rank order, keeping the gradient.

    Identity without an initialised process group. See the module docstring for the gradient
    convention under DDP.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    sizes = _shard_sizes(x)
    return _unpad(_autograd_all_gather(_pad_rows(x, max(sizes))), sizes)


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank in rank order, without gradient (attributes, masks, labels).

    Identity without an initialised process group. Boolean tensors are supported.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    is_bool = x.dtype == torch.bool
    local = x.detach().to(torch.uint8) if is_bool else x.detach()
    sizes = _shard_sizes(local)
    padded = _pad_rows(local, max(sizes))
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    out = _unpad(chunks, sizes)
    return out.bool() if is_bool else out


def gather_optional(x: torch.Tensor | None, gather: bool) -> torch.Tensor | None:
    """``all_gather_no_grad(x)`` when ``gather`` is true and ``x`` is given, else ``x``."""
    return all_gather_no_grad(x) if (gather and x is not None) else x
