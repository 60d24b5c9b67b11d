"""Fine-tuning on several GPUs (or CPU processes) with PyTorch's DistributedDataParallel, started by
``torchrun``:

    torchrun --nproc-per-node 4 app.py --store DIR train --size full

Every process reads the same labels and builds the same network (same seed, and rank 0's active version:
``share``); each trains on its own share of every epoch's images (``DistributedSampler`` under the
aspect-ratio batches), gradients are averaged by DDP. Only rank 0 registers round 0 (app.py), evaluates,
writes the checkpoint and the version row, and reports progress to the job row. Backend: NCCL on CUDA, gloo
on the CPU.

No rank ever waits in a collective for work that only another rank does, except in the one place that cannot
be avoided, and there within a timeout sized for it:
- Every iteration the ranks agree (``agree``, one all_reduce, after the forward pass and before the backward
  pass with its DDP collectives) on rank 0's planned length, on a cancel, on whether every rank's loss is
  finite and on whether any rank failed (an out-of-memory in the forward pass, or the next batch, loaded
  ahead for this, could not be loaded): a divergence or a failure on one rank is raised on every rank at the
  same iteration (model.train.train_loop), so none is left in the backward pass's all_reduce, or in the
  collectives DDP may run as a forward pass starts (``wrap``), waiting for a rank that stopped. An error past
  that point (in the backward pass) ends its process, and torchrun then ends the others.
- After the last iteration there is no collective at all: the other ranks close their end of the process
  group and exit (torchrun waits for rank 0), while rank 0 evaluates, saves and writes the version, however
  long that takes. (They used to wait in a barrier, which NCCL aborts after its default 10 minutes: torchrun
  then killed rank 0 in the middle of its evaluation.)
- Before training the ranks meet when the process group starts, and rank 0 may be late by its round-0
  download (app.py registers round 0 on rank 0 alone): the group's ``TIMEOUT`` covers that wait.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import os
from typing import Any, NamedTuple

import torch
import torch.distributed as td

# the longest one rank may wait for another inside a collective: the start, while rank 0 downloads the
# round-0 weights. Also NCCL's watchdog limit for a collective that hangs (its default is 10 minutes).
TIMEOUT = datetime.timedelta(minutes=30)


class Verdict(NamedTuple):
    """What the ranks agreed on in one iteration (``Dist.agree``)."""
    planned: int  # rank 0's planned iteration count
    cancel: bool  # some rank was asked to stop
    diverged: int  # how many ranks have a loss that is not finite
    failed: int  # how many ranks failed before the backward pass


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    local_world: int = 1  # processes on this machine (torchrun's LOCAL_WORLD_SIZE)
    timeout: datetime.timedelta = TIMEOUT

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (cuda:LOCAL_RANK) when training on CUDA."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def start(self, device: torch.device) -> None:
        if not td.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(self.local_rank)
            td.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=self.timeout)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model under DDP, whose only collectives in an iteration are then the backward pass's gradient
        all_reduce and, once (the second iteration), its bucket rebuild at the start of the forward pass:
        - Every trainable parameter takes part in every iteration's loss (a head with nothing to learn from a
          batch, the keypoint head on a batch without a keypoint class, adds its logits' sum times 0:
          torchvision's losses and model.heads), so DDP need not search the graph for unused parameters
          after each forward pass (tests/model/test_distributed.py checks it).
        - Buffers are not broadcast from rank 0 at every forward pass (a collective there): the only ones that
          change are BatchNorm's running statistics of a model trained from scratch, which training does not
          use (a batch is normalised by its own statistics) and which rank 0 keeps from its own share."""
        ids = [device.index] if device.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel
        # (torch 2.14 renamed it; the new one still makes the buffers equal once, when DDP starts)
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
                   else "broadcast_buffers")
        return ddp(model, device_ids=ids, **{no_sync: False})

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` (a small picklable object), on every rank."""
        box = [value]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, planned: int, cancel: bool, finite: bool, failed: bool, device: torch.device) -> Verdict:
        """One all_reduce (a sum) of every rank's word on this iteration: rank 0's plan (the others add 0),
        the ranks cancelling, those whose loss is not finite and those that failed."""
        t = torch.tensor([planned if self.main else 0, int(cancel), int(not finite and not failed), int(failed)],
                         dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
        td.all_reduce(t)
        planned_, cancel_, diverged, failed_ = t.tolist()
        return Verdict(planned_, bool(cancel_), diverged, failed_)

    def failures(self, mine: str | None) -> list[tuple[int, str]]:
        """Every failed rank's message, on every rank: (rank, message). Called by all ranks together once
        ``agree`` has said that some rank failed."""
        said: list[Any] = [None] * self.world
        td.all_gather_object(said, mine)
        return [(r, m) for r, m in enumerate(said) if m is not None]

    def finish(self) -> None:
        """Leave the process group: no collective (a rank that is done does not wait for the others)."""
        if td.is_initialized():
            td.destroy_process_group()


def from_env() -> Dist | None:
    """The process group torchrun describes in the environment; None for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")),
                int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
