"""Where computation runs: the one place a ``--device`` value becomes a torch device."""

from __future__ import annotations

import torch

from cmkd_doctor import distributed
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.files import host_memory_free, human_size


def resolve_device(spec: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda[:N]`` must exist.

    Under torchrun, ``auto`` and ``cuda`` mean this process's own GPU
    (``cuda:LOCAL_RANK``), and the first call joins the process group
    (:func:`cmkd_doctor.distributed.init`).
    """
    device = spec if isinstance(spec, torch.device) else _parse(spec)
    distributed.init(device)
    return device


def _parse(spec: str) -> torch.device:
    text = str(spec).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda" and distributed.launched():
        local, visible = distributed.local_rank(), torch.cuda.device_count()
        if local >= visible:
            raise InputError(f"--device {spec}: torchrun started process {local} on this "
                             f"machine but only {visible} CUDA device(s) are visible; use "
                             "one process per GPU (--nproc-per-node) or --device cpu")
        text = f"cuda:{local}"
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise InputError(f"--device must be auto, cpu, cuda or cuda:N; got {spec!r}")
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: no CUDA device is available here "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
        return torch.device(text)
    raise InputError(f"--device must be auto, cpu, cuda or cuda:N; got {spec!r}")


def memory_free(device: torch.device) -> int:
    """Bytes free for new work on ``device``: the GPU's free memory, or the machine's
    available physical memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_memory_free()


def require_memory(need: int, what: str, device: torch.device) -> None:
    """Refuse, before any work, a request that cannot fit: ``what`` needs ``need`` bytes."""
    free = memory_free(device)
    if need > free:
        raise InputError(f"{what} needs about {human_size(need)} of memory, more than the "
                         f"{human_size(free)} free on {device}; ask for less")
