"""Several processes of one command (``accelerate launch --multi_gpu --num_processes N -m speechkeep ...``
or ``torchrun``): this process's rank, barriers and sums across processes. One process (the usual case)
needs nothing of torch.distributed: rank 0 of 1, and every collective is a no-op."""

from __future__ import annotations

import os
from typing import Iterable


def launched_world() -> int:
    """How many processes the launcher started (``$WORLD_SIZE``; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


class Processes:
    """This process's rank among those of a launch (one process: rank 0 of 1).

    With several processes the process group is initialised through accelerate (gloo on CPU,
    NCCL on GPUs)."""

    def __init__(self) -> None:
        self.rank, self.world = 0, launched_world()
        self._state = None
        if self.world > 1:
            import torch
            from accelerate import PartialState

            self._state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self._state.process_index, self._state.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self):
        import torch

        return self._state.device if self._state is not None else torch.device("cpu")

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def all_reduce_sum(self, tensors: Iterable) -> None:
        """Sum each tensor over the processes, in place (a no-op with one process)."""
        if self._state is None:
            return
        import torch.distributed as dist

        for t in tensors:
            if t.device != self.device:
                moved = t.to(self.device)
                dist.all_reduce(moved)
                t.copy_(moved)
            else:
                dist.all_reduce(t)


def fsdp_on_cpu(accelerator) -> bool:
    """Make a CPU run launched with an FSDP config (``ACCELERATE_USE_FSDP=true``, as ``accelerate launch
    --config_file configs/accelerate/fsdp.yaml`` sets) actually shard; returns whether it did.

    Given ``cpu=True`` (which several CPU processes need, see :class:`Processes`), accelerate 1.x makes
    the run MULTI_CPU and silently ignores the FSDP plugin: the processes would train as DDP. torch's
    FSDP2 (``fully_shard``) itself runs on CPU over gloo, so the accelerator's state is switched to FSDP
    with the plugin read from the same environment, as accelerate does on GPUs."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or accelerator.distributed_type.name != "MULTI_CPU":
        return False
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    return True
