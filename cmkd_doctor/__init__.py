"""cmkd-doctor: diagnose crossmodal knowledge distillation with the Modality Focusing
Hypothesis (Xue et al., ICLR 2023).

The library API mirrors the CLI::

    from cmkd_doctor import load_paired, rank, RankOptions
    result = rank(load_paired("feats_a.npy", "feats_b.npy", "labels.npy"))
    result.salience  # (d_a,) modality-general decisive salience per channel

The package is laid out by concept: ``io`` (files in and out, the run directory),
``training``, ``ranking`` (Algorithm 1), ``teachers``, ``diagnosis`` (students, verdict,
advice), ``report``, ``examples``, ``schemas`` and ``cli``; ``wording`` renders every
sentence. The names below are the public API, imported on first use, so ``import
cmkd_doctor`` (and the commands that train nothing: ``--version``, ``--help``, ``schema``,
``examples list``) start without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS = {
    "CmkdError": "cmkd_doctor.errors",
    "InputError": "cmkd_doctor.errors",
    "ExpectationFailed": "cmkd_doctor.errors",
    "PairedData": "cmkd_doctor.io.inputs",
    "load_paired": "cmkd_doctor.io.inputs",
    "RunDir": "cmkd_doctor.io.rundir",
    "rank_files": "cmkd_doctor.io.rundir",
    "RankOptions": "cmkd_doctor.ranking.run",
    "RankResult": "cmkd_doctor.ranking.run",
    "rank": "cmkd_doctor.ranking.run",
    "TeacherSpec": "cmkd_doctor.teachers.masks",
    "derive_teacher": "cmkd_doctor.teachers.derivation",
    "DistillOptions": "cmkd_doctor.diagnosis.distill",
    "distill": "cmkd_doctor.diagnosis.distill",
    "check_expectation": "cmkd_doctor.diagnosis.verdict",
    "diagnose": "cmkd_doctor.diagnosis.diagnose",
    "fetch_example": "cmkd_doctor.examples.datasets",
    "FetchOptions": "cmkd_doctor.examples.downloads",
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
