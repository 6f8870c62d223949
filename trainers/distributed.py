"""The few collectives a data-parallel step needs, over accelerate's process group.

One process (the default) makes every call here a no-op, so the trainers read the same
with 1 or N processes. With N (`accelerate launch`), ranks play disjoint task groups and
meet only here: to sum counts, to gather small per-episode records, and to sum every
adapter's gradients before each optimizer step.

>>> ranks = Ranks.from_accelerator(accelerator)   # doctest: +SKIP
>>> ranks.sum([3.0, 1.0])                         # doctest: +SKIP
[6.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed


def close_process_group() -> None:
    """Close the gloo group (if any) before the process exits: a rank that exits with it
    open can be aborted by gloo's threads at interpreter exit ("terminate called without an
    active exception"); accelerate closes it only where trackers are on (`end_training`)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the run's processes, and how they talk."""

    index: int = 0
    count: int = 1
    device: torch.device = torch.device("cpu")  # where collectives' tensors live (gloo: cpu)

    @classmethod
    def from_accelerator(cls, accelerator) -> Ranks:
        return cls(index=accelerator.process_index, count=accelerator.num_processes, device=accelerator.device)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.count > 1

    def shard(self, items: Sequence) -> list:
        """This rank's contiguous share of `items` (shares differ in size by at most one)."""
        items = list(items)
        per, extra = divmod(len(items), self.count)
        start = self.index * per + min(self.index, extra)
        return items[start : start + per + (1 if self.index < extra else 0)]

    def shard_start(self, total: int) -> int:
        """Index of this rank's first item when `total` items are sharded."""
        per, extra = divmod(total, self.count)
        return self.index * per + min(self.index, extra)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so counts stay exact)."""
        return self._all_reduce(values, "SUM")

    def max(self, values: Sequence[float]) -> list[float]:
        """Element-wise maximum over ranks (e.g. the slowest rank's seconds)."""
        return self._all_reduce(values, "MAX")

    def _all_reduce(self, values: Sequence[float], op: str) -> list[float]:
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
        return t.tolist()

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's `items`, concatenated in rank order, on every rank. For small
        in-memory records (numbers, strings) only: nothing gathered here touches disk."""
        if not self.distributed:
            return list(items)
        parts: list[list[Any] | None] = [None] * self.count
        torch.distributed.all_gather_object(parts, list(items))
        return [x for part in parts for x in (part or [])]

    def from_main(self, compute: Callable[[], Any]) -> Any:
        """`compute()` run on the main process alone, its result on every rank: for work whose
        result would be the same on every rank (N copies of it would be N times the time)."""
        return self.gather([compute()] if self.is_main else [])[0]

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum `params`' gradients over ranks in one flat all-reduce, in the given order (the
        optimizer's, the same on every rank). A rank with no gradient for a parameter sends
        zeros; a parameter no rank has a gradient for keeps `grad=None`, so the optimizer
        skips it exactly as a single process would."""
        if not self.distributed or not params:
            return
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        flat = torch.zeros(total + len(params), dtype=torch.float32, device=self.device)  # grads, then presence
        offset = 0
        for i, (p, n) in enumerate(zip(params, sizes, strict=True)):
            if p.grad is not None:
                flat[offset : offset + n] = p.grad.detach().reshape(-1).to(flat.device, torch.float32)
                flat[total + i] = 1.0
            offset += n
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for i, (p, n) in enumerate(zip(params, sizes, strict=True)):
            if flat[total + i] > 0:
                summed = flat[offset : offset + n].view_as(p).to(p.device, p.dtype)
                if p.grad is None:
                    p.grad = summed.clone()
                else:
                    p.grad.copy_(summed)
            offset += n


SINGLE = Ranks()
