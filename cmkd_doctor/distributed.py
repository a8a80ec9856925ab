"""Data parallelism on PyTorch's own engine, for runs launched with ``torchrun``.

``torchrun --nproc-per-node N -m cmkd_doctor rank ...`` starts N processes with the
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` variables set. The first
:func:`cmkd_doctor.devices.resolve_device` call joins them into one process group
(``nccl`` on CUDA, ``gloo`` on the CPU) through torchrun's rendezvous. Then:

- training (step 1 of Algorithm 1, teachers, students) runs under
  :class:`~torch.nn.parallel.DistributedDataParallel`: every process draws the same
  global minibatch, computes the loss of its own slice of it, and DDP averages the
  gradients, so the update is the single-process one;
- the permutation phase gives each process a contiguous block of channels and sums
  the blocks with ``all_reduce``;
- only rank 0 writes files (:func:`cmkd_doctor.io.outputs.write_atomic` asks
  :func:`is_main`) and prints.

Without torchrun every function here is the single-process identity.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that need it, never by this module: commands that
# train nothing (--help, schema, examples list) ask is_main() and must start without it.


def _dist():
    import torch.distributed as dist

    return dist


def launched() -> bool:
    """True inside a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's index on its own machine (torchrun's ``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: torch.device) -> None:
    """Join torchrun's process group once: ``nccl`` for CUDA devices, else ``gloo``."""
    dist = _dist()
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
        if "device_id" in inspect.signature(dist.init_process_group).parameters:
            dist.init_process_group("nccl", device_id=device)  # binds NCCL eagerly
        else:  # torch < 2.3
            dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def shutdown() -> None:
    """Leave the process group (the CLI calls this on the way out)."""
    if active(any_size=True):
        _dist().destroy_process_group()


def active(any_size: bool = False) -> bool:
    """A process group of several processes is joined (``any_size``: of any size). None
    can be without torch.distributed imported, which is then left unimported."""
    if "torch.distributed" not in sys.modules:
        return False
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and (
        any_size or dist.get_world_size() > 1)


def size() -> int:
    return _dist().get_world_size() if active() else 1


def rank() -> int:
    """This process's rank; torchrun's ``RANK`` before the group is joined."""
    if active():
        return _dist().get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """True in the one process that writes files and prints (rank 0, or no torchrun)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (e.g. for files rank 0 writes and all then read)."""
    if active():
        _dist().barrier()


def from_main(value):
    """Rank 0's ``value`` in every process (a run id, a time stamp); ``value`` itself
    without torchrun."""
    if not active():
        return value
    box = [value]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def my_part(index: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """This process's contiguous slice of a global minibatch ``index``."""
    if not active():
        return index
    import torch

    return torch.tensor_split(index, size(), dim=dim)[rank()]


def my_channels(d: int) -> range:
    """This process's contiguous block of ``d`` channels in the permutation phase."""
    world, me = size(), rank()
    return range(d * me // world, d * (me + 1) // world)


def sum_all(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; every process gets the total."""
    if active():
        dist = _dist()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` under DistributedDataParallel when several processes train it.

    Buffers (the standardisation statistics) are the same everywhere and never change,
    so they are not re-broadcast at every step.
    """
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    # newer torch renames the switch (and deprecates the old name)
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in
               inspect.signature(DistributedDataParallel.__init__).parameters
               else "broadcast_buffers")
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None,
        **{no_sync: False})


def loss_scale(global_rows: int) -> float:
    """Multiply a sum of per-row losses over this process's slice by this.

    DDP averages gradients over the processes, so ``size() * sum_local / global_rows``
    gives every update the gradient of the mean over the whole global minibatch, also
    when the slices differ in size.
    """
    return size() / global_rows
