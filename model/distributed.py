"""Fine-tuning on several GPUs (or CPU processes) with PyTorch's DistributedDataParallel, started by
``torchrun``:

    torchrun --nproc-per-node 4 app.py --store DIR train --size full

Every process reads the same labels and builds the same network (same seed); each trains on its own share
of every epoch's images (``DistributedSampler`` under the aspect-ratio batches), gradients are averaged by
DDP. Only rank 0 evaluates, writes the checkpoint and the version row, and reports progress to the job row.
The ranks agree every iteration on the planned length (a time limit is planned on rank 0's timing) and on a
cancel, so none waits for a rank that stopped. Backend: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as td


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int

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
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        # unused parameters exist: the keypoint head runs only on batches with a keypoint class
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def agree(self, planned: int, cancel: bool, device: torch.device) -> tuple[int, bool]:
        """Rank 0's planned iteration count, and whether any rank wants to stop."""
        t = torch.tensor([planned if self.main else 0, int(cancel)], dtype=torch.int64,
                         device=device if device.type == "cuda" else "cpu")
        td.all_reduce(t)  # sum: rank 0's plan (the others add 0), and the count of ranks cancelling
        return int(t[0]), bool(t[1])

    def finish(self) -> None:
        if td.is_initialized():
            td.barrier()
            td.destroy_process_group()


def from_env() -> Dist | None:
    """The process group torchrun describes in the environment; None for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
