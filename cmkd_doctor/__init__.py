"""cmkd-doctor: diagnose crossmodal knowledge distillation with the Modality Focusing
Hypothesis (Xue et al., ICLR 2023).

The library API mirrors the CLI::

    from cmkd_doctor import load_paired, rank, RankOptions
    result = rank(load_paired("feats_a.npy", "feats_b.npy", "labels.npy"))
    result.salience  # (d_a,) modality-general decisive salience per channel

The names below are imported on first use, so ``import cmkd_doctor`` (and the commands
that train nothing: ``--version``, ``--help``, ``schema``, ``examples list``) start
without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "CmkdError": "cmkd_doctor.errors",
    "InputError": "cmkd_doctor.errors",
    "PairedData": "cmkd_doctor.inputs",
    "load_paired": "cmkd_doctor.inputs",
    "RankOptions": "cmkd_doctor.ranking",
    "RankResult": "cmkd_doctor.ranking",
    "rank": "cmkd_doctor.ranking",
    "rank_files": "cmkd_doctor.rundir",
    "RunDir": "cmkd_doctor.rundir",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cmkd_doctor' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
