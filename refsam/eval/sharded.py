"""Evaluation split across the ranks of a torchrun job.

Each rank predicts every ``world_size``-th video of a split (rank r: videos r, r + W, …)
and writes its masks to the shared output folder; what each video left in the family's run
(:meth:`~refsam.eval.families.base.FamilyRun.take`) goes to rank 0 as one zlib-compressed
pickle per rank (``torch.distributed.gather_object``), where it is put back in the split's
video order, so rank 0 scores exactly what a single process would have scored. Masks
compress ~50× (mostly background), which keeps the transfer small at real size.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's share of a split's videos."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside a world of {self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def split(self) -> bool:
        return self.world_size > 1

    def owns(self, index: int) -> bool:
        """Whether the video at ``index`` (in shard order) is this rank's."""
        return index % self.world_size == self.rank


def gather_on_main(
    shard: Shard, local: list[tuple[int, object, int]]
) -> list[tuple[int, object, int]]:
    """Every rank's ``(video index, kept, frames)`` on rank 0, in video order ([] elsewhere)."""
    if not shard.split:
        return sorted(local, key=lambda item: item[0])
    payload = zlib.compress(pickle.dumps(local, protocol=pickle.HIGHEST_PROTOCOL), 1)
    received: list[bytes | None] | None = [None] * shard.world_size if shard.is_main else None
    dist.gather_object(payload, received, dst=0)
    if not shard.is_main:
        return []
    merged = [item for blob in received or [] for item in pickle.loads(zlib.decompress(blob))]
    return sorted(merged, key=lambda item: item[0])
