"""Deriving teachers from a ``rank`` run, and the tensors teachers and students train on.

Rows: the run's saved split gives ``train`` and ``test``; a seeded, stratified tenth of
``train`` is held back as ``val`` for early stopping, and the rest is ``fit``. Test rows
only ever report metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmkd_doctor import __version__
from cmkd_doctor.classifiers import TrainOptions, train_classifiers
from cmkd_doctor.errors import InputError
from cmkd_doctor.inputs import sha256_of
from cmkd_doctor.metrics import evaluate, headline
from cmkd_doctor.rundir import RANK_FILES, Run
from cmkd_doctor.runtime import Progress, derive_seed, no_progress, rows_to
from cmkd_doctor.splits import fit_and_validation
from cmkd_doctor.teachers import (
    SOURCES,
    Teacher,
    TeacherSpec,
    fill_values,
    load_base,
    load_teacher,
    nullified_channels,
    save_teacher,
)
from cmkd_doctor.training import predict

_SEED_TEACHER = 22
PARTS = ("fit", "val", "train", "test")


@dataclass
class RunTensors:
    """Features of both sides and labels, per part of the rows, on one device."""

    teacher: dict[str, torch.Tensor]
    student: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    n_classes: int
    multilabel: bool

    @property
    def metric(self) -> str:
        return headline(self.multilabel)


def run_tensors(run: Run, device: torch.device) -> RunTensors:
    """Load a run's rows onto ``device``, split into fit / val / train / test."""
    y = run.data.labels.y
    fit, val = fit_and_validation(run.split.train, y, run.seed)
    rows = {"fit": fit, "val": val, "train": run.split.train, "test": run.split.test}

    def take(array: np.ndarray, dtype=np.float32) -> dict[str, torch.Tensor]:
        return {k: rows_to(array, r, device, dtype) for k, r in rows.items()}

    labels = run.data.labels
    return RunTensors(
        teacher=take(run.features(run.teacher_side)),
        student=take(run.features(run.student_side)),
        y=take(y, np.float32 if labels.multilabel else np.int64),
        n_classes=labels.n_classes, multilabel=labels.multilabel)


@dataclass
class DerivedTeacher:
    """A teacher and its sidecar; ``reused`` when it was loaded from ``teachers/``."""

    spec: TeacherSpec
    teacher: Teacher
    path: Path
    sidecar: dict[str, Any]
    reused: bool

    @property
    def test_metric(self) -> float | None:
        metrics = self.sidecar["metrics"]
        return None if metrics is None else next(iter(metrics.values()))


def _wanted(run: Run, spec: TeacherSpec, train: TrainOptions) -> dict[str, Any]:
    trains = spec.source == "trained" or spec.refit
    return {"spec": spec.to_dict(),
            "train": train.to_dict() if trains else None,
            "rank": {"created": run.document["created"],
                     "salience_sha256": sha256_of(run.path / RANK_FILES["salience"])}}


def _train_one(x: dict[str, torch.Tensor], tensors: RunTensors, train: TrainOptions,
               seed: int, progress: Progress, task: str) -> nn.Module:
    return train_classifiers(
        x["fit"], tensors.y["fit"], tensors.n_classes, tensors.multilabel, train,
        [derive_seed(seed, _SEED_TEACHER)], val=(x["val"], tensors.y["val"]),
        progress=progress, task=task)[0]


def derive_teacher(
    run: Run,
    spec: TeacherSpec,
    train: TrainOptions | None = None,
    device: torch.device | str = "cpu",
    tensors: RunTensors | None = None,
    progress: Progress = no_progress,
) -> DerivedTeacher:
    """Derive (or reuse from ``teachers/``) the teacher ``spec`` describes.

    A saved teacher is reused only when its spec, training options and the ranking it
    was derived from all match; otherwise it is derived again and overwritten.
    """
    spec = spec.checked()
    train = (train or TrainOptions()).resolved(run.rank_options["hidden"])
    device = torch.device(device)
    path = run.path / "teachers" / f"{spec.name}.safetensors"
    wanted = _wanted(run, spec, train)
    sidecar_path = path.with_suffix(".json")
    if path.is_file() and sidecar_path.is_file():
        sidecar = json.loads(sidecar_path.read_text())
        if all(sidecar.get(k) == v for k, v in wanted.items()):
            teacher, _ = load_teacher(path, device)
            return DerivedTeacher(spec, teacher, path, sidecar, reused=True)

    tensors = tensors or run_tensors(run, device)
    x = tensors.teacher
    d = x["fit"].shape[1]
    nullified = nullified_channels(run.salience, spec.mode, spec.ratio, spec.seed)
    keep = torch.ones(d, dtype=torch.bool, device=device)
    keep[torch.as_tensor(nullified, device=device)] = False
    fill = fill_values(x["train"], spec.fill)
    if spec.refit and spec.mode != "regular":
        if spec.source not in SOURCES and Path(spec.source).suffix.lower() == ".onnx":
            raise InputError("--refit retrains a cmkd-doctor network on the masked "
                             f"features; {spec.source} is an ONNX model and cannot be "
                             "retrained here: drop --refit or use --from trained")
        masked = {k: torch.where(keep, v, fill) for k, v in x.items()}
        base = _train_one(masked, tensors, train, spec.seed, progress, f"refit {spec.name}")
    elif spec.source == "trained" and spec.mode == "regular":
        base = _train_one(x, tensors, train, spec.seed, progress, "teacher regular")
    elif spec.source == "trained":
        regular = TeacherSpec(mode="regular", source="trained", seed=spec.seed)
        base = derive_teacher(run, regular, train, device, tensors, progress).teacher.base
    elif spec.source == "aligned":
        base = run.aligned_net(device)
    else:
        base = load_base(spec.source, d, tensors.n_classes, device)
    teacher = Teacher(base, keep, fill).to(device)

    metrics = (evaluate(predict(teacher, x["test"]), tensors.y["test"], tensors.multilabel)
               if len(x["test"]) else None)
    sidecar = {
        **wanted,
        "name": spec.name,
        "mode": spec.mode,
        "ratio": spec.ratio,
        "seed": spec.seed,
        "source": wanted["spec"]["source"],
        "fill": spec.fill,
        "refit": spec.refit,
        "modality": run.teacher_side,
        "n_channels": d,
        "nullified": nullified.tolist(),
        "mask": keep.cpu().int().tolist(),
        "fill_values": fill.cpu().tolist(),
        "metrics": metrics,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cmkd_doctor": __version__,
    }
    save_teacher(teacher, path, sidecar)
    return DerivedTeacher(spec, teacher, path, sidecar, reused=False)
