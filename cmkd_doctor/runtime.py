"""Devices, seeds and progress reporting shared by every computing module."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cmkd_doctor import distributed
from cmkd_doctor.errors import InputError
from cmkd_doctor.streaming import read_rows

# progress(task, completed, total): library code reports, the CLI draws.
Progress = Callable[[str, int, int], None]


def no_progress(task: str, completed: int, total: int) -> None:
    """The default :data:`Progress`: report nothing."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda[:N]`` must exist.

    Under torchrun, ``auto`` and ``cuda`` mean this process's own GPU
    (``cuda:LOCAL_RANK``), and the first call joins the process group
    (:func:`cmkd_doctor.distributed.init`).
    """
    device = _parse_device(spec)
    distributed.init(device)
    return device


def _parse_device(spec: str) -> torch.device:
    text = spec.strip().lower()
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


def rows_to(array: np.ndarray, rows: np.ndarray, device: torch.device,
            dtype: type = np.float32) -> torch.Tensor:
    """Rows ``rows`` of a (possibly memory-mapped) array as a tensor on ``device``, read
    as :func:`cmkd_doctor.streaming.read_rows` does (no pages of the file kept)."""
    return torch.as_tensor(np.asarray(read_rows(array, rows), dtype=dtype)).to(device)


def derive_seed(seed: int, *path: int) -> int:
    """One seed in, an independent child seed per ``path`` (e.g. stage, repeat) out.

    Serial, batched and multi-process runs derive the same child for the same path.
    """
    return int(np.random.SeedSequence(seed, spawn_key=path).generate_state(1)[0])


def generator(seed: int, *path: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``derive_seed(seed, *path)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *path))
