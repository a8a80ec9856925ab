"""Deriving teachers from a ``rank`` run (paper Sec. 5.4, App. B.4).

A derived teacher is a mask in front of a base model (:class:`~cmkd_doctor.teachers.masks.
Teacher`): the base is a regular teacher trained here, rank's aligned f1, or a user's
checkpoint; with ``refit`` it is retrained on the masked features (Sec. 5.1). Teachers
train on the run's training rows through :func:`~cmkd_doctor.training.stacked.train_classifiers`
(early-stopping on a seeded tenth of them); the test rows only report metrics. Derived
teachers are saved in the run directory and reused while their options and the ranking
match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmkd_doctor import __version__
from cmkd_doctor.devices import resolve_device
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.outputs import check_out_file
from cmkd_doctor.io.rundir import Run, RunDir, now
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.seeds import derive_seed
from cmkd_doctor.teachers.masks import (
    SOURCES,
    Teacher,
    TeacherSpec,
    derived_mask,
    export_onnx,
    load_base,
)
from cmkd_doctor.training import curves
from cmkd_doctor.training.engine import evaluate_rows
from cmkd_doctor.training.stacked import (
    Member,
    Rows,
    TrainOptions,
    require_trainable,
    train_classifiers,
)


@dataclass
class DerivedTeacher:
    """A teacher and its sidecar; ``reused`` when it was loaded from ``teachers/``."""

    spec: TeacherSpec
    teacher: Teacher
    path: Path
    sidecar: dict[str, Any]
    reused: bool

    def to_dict(self, export: str | Path | None = None) -> dict[str, Any]:
        """The ``teacher`` document ``derive-teacher --json`` prints: the sidecar, where
        the network is, whether it was reused, and the ONNX export."""
        from cmkd_doctor.schemas import stamp

        return stamp("teacher", {**self.sidecar, "file": str(self.path),
                                 "reused": self.reused,
                                 "onnx": str(export) if export else None})

    @property
    def test_metric(self) -> float | None:
        metrics = self.sidecar["metrics"]
        return None if metrics is None else next(iter(metrics.values()))


def _wanted(run: Run, spec: TeacherSpec, train: TrainOptions) -> dict[str, Any]:
    """What a saved teacher must have been made with to be reused."""
    trains = spec.source == "trained" or spec.refit
    return {"spec": spec.to_dict(),
            "train": train.to_dict() if trains else None,
            "rank": {"run_id": run.run_id}}


def derive_teacher(
    run: Run,
    spec: TeacherSpec,
    train: TrainOptions | None = None,
    device: torch.device | str = "cpu",
    progress: Progress = no_progress,
    cache: dict[str, DerivedTeacher] | None = None,
) -> DerivedTeacher:
    """Derive (or reuse from ``teachers/``) the teacher ``spec`` describes.

    A saved teacher is reused only when its spec, training options and the ranking it
    was derived from all match; otherwise it is derived again and overwritten.
    ``cache`` holds the teachers of one call (``distill`` derives several from one
    regular teacher) so that they are never read back from disk mid-call.
    """
    spec = spec.checked()
    train = (train or TrainOptions()).resolved(run.rank_options["hidden"])
    device = resolve_device(device)
    cache = {} if cache is None else cache
    if spec.name in cache:
        return cache[spec.name]
    wanted = _wanted(run, spec, train)
    saved = run.dir.saved_teacher(spec.name, wanted, device)
    if saved is not None:
        # where the file is once the call lands, not its staged copy
        path = run.dir.public(run.dir.teacher_path(spec.name)).absolute()
        found = DerivedTeacher(spec, saved[0], path, saved[1], reused=True)
        cache[spec.name] = found
        return found

    rows = run.rows(run.teacher_side, device, train.chunk_rows)
    d = run.salience.shape[0]
    nullified, keep, fill = derived_mask(run, spec, rows)
    member = Member(derive_seed(spec.seed, "teacher"))
    if spec.refit and spec.mode != "regular":
        if spec.source not in SOURCES and Path(spec.source).suffix.lower() == ".onnx":
            raise InputError("--refit retrains a cmkd-doctor network on the masked "
                             f"features; {spec.source} is an ONNX model and cannot be "
                             "retrained here: drop --refit or use --from trained")
        refit = Member(member.seed, keep=keep, fill=fill.cpu().numpy())
        base = train_classifiers(rows, [refit], train, progress=progress,
                                 task=f"refit {spec.name}")[0]
    elif spec.source == "trained" and spec.mode == "regular":
        base = train_classifiers(rows, [member], train, progress=progress,
                                 task="teacher regular")[0]
    elif spec.source == "trained":
        regular = TeacherSpec(mode="regular", source="trained", seed=spec.seed)
        base = derive_teacher(run, regular, train, device, progress, cache).teacher.base
    elif spec.source == "aligned":
        base = run.aligned_net(device)
    else:
        base = load_base(spec.source, d, rows.n_classes, device)
    teacher = Teacher(base, torch.as_tensor(keep), fill).to(device)
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
        "constant_channels": run.constant.tolist(),
        "standardized": run.standardize,
        "nullified": nullified.tolist(),
        "mask": keep.astype(int).tolist(),
        "fill_values": fill.cpu().tolist(),
        "metrics": teacher_metrics(teacher, rows),
        "created": now(),
        "cmkd_doctor": __version__,
    }
    curves.metrics(f"teacher {spec.name}", sidecar["metrics"])
    path = run.dir.write_teacher(teacher, spec.name, sidecar).absolute()
    found = DerivedTeacher(spec, teacher, path, sidecar, reused=False)
    cache[spec.name] = found
    return found


def derive(
    run_dir: str | Path,
    spec: TeacherSpec,
    train: TrainOptions | None = None,
    device: torch.device | str = "auto",
    export: str | Path | None = None,
    progress: Progress = no_progress,
) -> DerivedTeacher:
    """``derive-teacher``: derive one teacher from the run in ``run_dir`` and, with
    ``export``, also write it (mask baked in) as ONNX. Every option and path is checked
    before any training."""
    spec = spec.checked()
    train = (train or TrainOptions()).checked()
    if export is not None:
        check_out_file(export, "--export-onnx")
    # the teacher's network and sidecar (and the export) land together or not at all
    with RunDir(run_dir).transaction() as staged:
        run = staged.load()
        device = resolve_device(device)
        require_trainable(run.features(run.teacher_side).shape[1],
                          train.resolved(run.rank_options["hidden"]),
                          run.data.labels.n_classes, device, "teacher")
        found = derive_teacher(run, spec, train, device, progress)
        if export is not None:
            export_onnx(found.teacher, export, len(run.salience))
    return found


def teacher_metrics(model: torch.nn.Module, rows: Rows) -> dict[str, float] | None:
    """A teacher's metrics on the test rows (``None`` without any)."""
    found = evaluate_rows(model, [rows.part(rows.test)], 0, 1, rows.multilabel)
    return None if found is None else found[0]


def derive_network(run_dir: str | Path, model: str | Path | None, layer: str | None,
                   spec: TeacherSpec, onnx_out: str | Path | None = None,
                   pt2_out: str | Path | None = None, channel_axis: int = 1,
                   weights: str | Path | None = None,
                   input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``derive-teacher --model TEACHER --layer NAME``: the user's whole teacher masked
    after ``layer`` by the ranking of ``run_dir`` (see
    :func:`cmkd_doctor.teachers.whole_networks.mask_network`, which does it)."""
    from cmkd_doctor.teachers.whole_networks import mask_network

    return mask_network(lambda: RunDir(run_dir).load(), model, layer, spec, onnx_out,
                        pt2_out, channel_axis, weights, input_shape)
