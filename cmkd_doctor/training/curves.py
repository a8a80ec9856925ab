"""Training curves where people look for them: TensorBoard event files.

Inside :func:`tensorboard` (the CLI's ``--tensorboard DIR``), every network the engine
fits (:func:`cmkd_doctor.training.engine.fit`: the aligned pair of Algorithm 1, teachers,
students) adds its training and validation loss per epoch and its kept epoch, one run
of curves per fit, numbered in the order they were fitted; :func:`metrics` adds the
metrics a command computes afterwards (the aligned networks' and teachers' test
metrics, each student's). Needs the ``tensorboard`` package (``pip install
'cmkd-doctor[tensorboard]'``); under torchrun only rank 0 writes. Event files are
appended as training goes, so an interrupted run keeps the curves so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from cmkd_doctor import distributed
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.outputs import check_out_dir


class Fit(Protocol):
    """What :func:`fitted` reads of a fit (:class:`~cmkd_doctor.training.engine.FitResult`
    has it; the engine calls this module, so the type is stated here, not imported)."""

    epochs_run: int
    best_epoch: list[int]
    train_loss: list[list[float]]
    val_loss: list[list[float]]


class _Sink:
    """Where curves go; the writer (and its event file) is made at the first curve, so
    a command refused before any training writes nothing."""

    def __init__(self, logdir: Path, make: Any):
        self.logdir, self.make, self._writer = logdir, make, None
        self.fits = 0

    @property
    def writer(self) -> Any:
        if self._writer is None and distributed.is_main():
            self._writer = self.make(str(self.logdir))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


_SINK: ContextVar[_Sink | None] = ContextVar("cmkd_doctor_tensorboard", default=None)


@contextmanager
def tensorboard(logdir: str | Path | None, option: str = "--tensorboard") -> Iterator[None]:
    """Write the curves of every fit inside the block to ``logdir`` (nothing when
    ``None``). The folder and the ``tensorboard`` package are checked first."""
    if logdir is None:
        yield
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError(f"{option} needs the tensorboard package: pip install "
                         "'cmkd-doctor[tensorboard]'") from None
    check_out_dir(logdir, option)
    sink = _Sink(Path(logdir), SummaryWriter)
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)
        sink.close()


def fitted(task: str, result: Fit, names: list[str] | None = None) -> None:
    """Add one fit's curves: ``fit NN task/NAME/{train_loss, val_loss}`` per epoch and
    ``.../kept_epoch`` (members named ``member k`` unless ``names`` are given)."""
    sink = _SINK.get()
    if sink is None or sink.writer is None:
        return
    sink.fits += 1
    run = f"fit {sink.fits:02d} {task}"
    for s, (train, val) in enumerate(zip(result.train_loss, result.val_loss, strict=True)):
        name = names[s] if names else f"member {s}"
        for epoch, loss in enumerate(train, start=1):
            sink.writer.add_scalar(f"{run}/{name}/train_loss", loss, epoch)
        for epoch, loss in enumerate(val, start=1):
            sink.writer.add_scalar(f"{run}/{name}/val_loss", loss, epoch)
        sink.writer.add_scalar(f"{run}/{name}/kept_epoch", result.best_epoch[s],
                               result.epochs_run)
    sink.writer.flush()


def metrics(task: str, found: dict[str, float] | None, step: int = 0) -> None:
    """Add metrics a command computed (``task/metric``), when curves are written."""
    sink = _SINK.get()
    if sink is None or sink.writer is None or not found:
        return
    for name, value in found.items():
        sink.writer.add_scalar(f"metrics/{task}/{name}", value, step)
    sink.writer.flush()
