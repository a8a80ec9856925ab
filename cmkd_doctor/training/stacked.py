"""Teachers and students: S classifiers on one modality's rows, trained as one stack.

A student learns with Eq. 1 plus a temperature (Hinton et al.):
``rho * CE(y, s(x_b)) + (1 - rho) * T^2 * KL(softmax(t(x_a)/T) || softmax(s(x_b)/T))``
(BCE and per-class sigmoid KD for multi-label tasks). A teacher, or a No-KD student, is
the case ``rho = 1``. Every classifier of a call is one *member* of one stacked model
(:mod:`cmkd_doctor.training.engine`), with its own seed, its own ``rho`` and its own teacher, so
the students of every teacher train at once; a member's result does not depend on the
others in the stack.

The teachers' logits come as a grouped array ``(n, T, K)`` beside the features: member
``m`` reads column ``Member.teacher``. Inputs may be streamed from memory-mapped files
(:class:`~cmkd_doctor.io.streaming.RowSet`); the logits then go to a scratch file too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.devices import require_memory
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.streaming import RowSet, plan_chunk_rows, release, row_bytes
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.seeds import derive_seed
from cmkd_doctor.training.engine import FitResult, Schedule, auto_epochs, fit, predict
from cmkd_doctor.training.losses import kd_loss_rows, task_loss_rows
from cmkd_doctor.training.mlp import (
    Net,
    NetConfig,
    Stacked,
    new_net,
    parameter_count,
    parse_hidden,
    standardisation,
)
from cmkd_doctor.training.student_networks import Architecture, ArchNet, StackedNetworks
from cmkd_doctor.validation import number, whole


@dataclass(frozen=True)
class TrainOptions:
    """How teachers and students are trained.

    Attributes
    ----------
    hidden
        Hidden widths (``()``: linear model); ``None`` takes the rank run's.
    epochs
        Most epochs; ``None``: :data:`~cmkd_doctor.choices.EPOCHS_DEFAULT`.
    patience
        Early stopping on the validation rows; 0 trains all epochs.
    chunk_rows
        Rows read at a time from memory-mapped inputs; ``None`` keeps them on the device
        when they fit (see :func:`cmkd_doctor.io.streaming.plan_chunk_rows`).
    """

    hidden: tuple[int, ...] | None = None
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 10
    chunk_rows: int | None = None

    def checked(self) -> TrainOptions:
        whole("epochs", self.epochs, 1, optional=True)
        whole("batch_size", self.batch_size, 1)
        number("lr", self.lr, "a positive number", low=0, open_low=True)
        whole("patience", self.patience, 0)
        whole("chunk_rows", self.chunk_rows, 1, optional=True)
        hidden = None if self.hidden is None else parse_hidden(self.hidden)
        return replace(self, hidden=hidden)

    def resolved(self, default_hidden: tuple[int, ...] | list[int]) -> TrainOptions:
        """These options with ``hidden`` filled in when it was left to the run."""
        options = self.checked()
        return options if options.hidden is not None else replace(
            options, hidden=parse_hidden(tuple(default_hidden)))

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": None if self.hidden is None else list(self.hidden)}


@dataclass(frozen=True)
class Member:
    """One classifier of a stacked fit.

    Attributes
    ----------
    seed
        Its member seed: its initialisation and minibatch order derive from it (stages
        ``net_init`` and ``net_shuffle`` of :mod:`cmkd_doctor.seeds`).
    rho, temperature
        Eq. 1: ``rho = 1`` is the task loss alone (a teacher, a No-KD student).
    teacher
        The column of the soft-label array it distils from.
    keep, fill
        An input mask (a refitted teacher, paper Sec. 5.1): channels where ``keep`` is
        false are replaced by ``fill`` before the network sees them.
    """

    seed: int
    rho: float = 1.0
    temperature: float = 1.0
    teacher: int = 0
    keep: np.ndarray | None = None
    fill: np.ndarray | None = None


@dataclass
class Rows:
    """What classifiers train on: one modality's features and the labels, with the rows
    that are fitted (``fit``), watched for early stopping (``val``) and reported
    (``test``)."""

    x: np.ndarray
    y: np.ndarray
    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray
    n_classes: int
    multilabel: bool
    device: torch.device
    chunk_rows: int | None = None
    standardize: bool = True  # see cmkd_doctor.training.mlp.standardisation

    def plan(self, extra_bytes: int = 0) -> int:
        """Rows per chunk for every part (resident when all fit)."""
        n = len(self.fit) + len(self.val) + len(self.test)
        return plan_chunk_rows(n, row_bytes([self.x, self.y]) + extra_bytes, self.device,
                               self.chunk_rows)

    def part(self, rows: np.ndarray, extra: Sequence[np.ndarray] = (),
             chunk_rows: int | None = None) -> RowSet:
        """A RowSet of ``[x, y, *extra]`` over ``rows``; every extra array is grouped."""
        grouped = range(2, 2 + len(extra))
        return RowSet([self.x, self.y, *extra], rows, self.device,
                      chunk_rows or self.plan(), grouped=grouped)

    def with_x(self, x: np.ndarray) -> Rows:
        return replace(self, x=x)


def train_classifiers(
    rows: Rows,
    members: Sequence[Member],
    options: TrainOptions,
    *,
    soft: np.ndarray | None = None,
    progress: Progress = no_progress,
    task: str = "train",
    fits: list[FitResult] | None = None,
    architecture: Architecture | None = None,
) -> list[Net]:
    """Train one classifier per member on ``rows.x``, all at once.

    The classifiers are MLPs of ``options.hidden`` (:class:`~cmkd_doctor.training.mlp.Net`),
    or networks of ``architecture`` reading each flat row reshaped to its input
    (:class:`~cmkd_doctor.training.student_networks.ArchNet`, stacked by
    :class:`~cmkd_doctor.training.student_networks.StackedNetworks`).

    ``soft (n, T, K)``, filled on the fit and validation rows, holds the teachers'
    logits of Eq. 1. Members with ``patience > 0`` early-stop on their own loss over
    ``rows.val`` and keep their best epoch. ``fits`` collects the engine's
    :class:`~cmkd_doctor.training.engine.FitResult` (epochs per member, loss curves).

    Returns
    -------
    list of Net
        One trained network per member, in eval mode, taking raw features.
    """
    options = options.checked()
    if options.hidden is None and architecture is None:
        raise ValueError("train_classifiers needs hidden widths; call TrainOptions.resolved")
    if architecture is not None and any(m.keep is not None for m in members):
        raise ValueError("input masks are for MLPs on features")
    extra = [] if soft is None else [soft]
    chunk = rows.plan(row_bytes(extra))
    fitting = rows.part(rows.fit, extra, chunk)
    val = (rows.part(rows.val, extra, chunk)
           if len(rows.val) and options.patience > 0 else None)
    device = rows.device
    mean, scale = standardisation(*fitting.stats(0), rows.standardize)
    config = NetConfig(fitting.widths[0], options.hidden or (), rows.n_classes,
                       rows.multilabel)
    model = stack(_initialised(members, config, architecture, mean, scale)).to(device)
    # every member standardises with the same statistics (a masked channel then is 0):
    # do it once per row rather than once per member and step
    for part in (fitting, val):
        if part is not None:
            part.apply(0, lambda x: (x - mean) / scale)
    loss_rows = _eq1_loss(members, config.d_in, device, rows.multilabel, soft is not None)
    epochs = options.epochs or auto_epochs(len(rows.fit), options.batch_size)
    result = fit(model, loss_rows, fitting,
        Schedule(epochs, options.lr, options.batch_size, options.patience),
        shuffle_seeds=[derive_seed(m.seed, "net_shuffle") for m in members],
        groups=None if soft is None else torch.tensor([m.teacher for m in members]),
        val=val, progress=progress, task=task)
    if fits is not None:
        fits.append(result)
    return [model.unstack(s) for s in range(len(members))]


def _initialised(members: Sequence[Member], config: NetConfig,
                 architecture: Architecture | None, mean: torch.Tensor,
                 scale: torch.Tensor) -> list[torch.nn.Module]:
    """One new network per member, initialised from its seed, standardising with
    ``mean`` and ``scale`` (a masked channel: its fill, unscaled)."""
    nets = []
    for m in members:
        seed = derive_seed(m.seed, "net_init")
        net = new_net(config, seed) if architecture is None else architecture.new(seed)
        if m.keep is None:
            net.set_standardisation(mean.cpu(), scale.cpu())
        else:
            keep = torch.as_tensor(m.keep, dtype=torch.bool)
            net.set_standardisation(
                torch.where(keep, mean.cpu(), torch.as_tensor(m.fill).float()),
                torch.where(keep, scale.cpu(), torch.ones_like(scale.cpu())))
        nets.append(net)
    return nets


def _eq1_loss(members: Sequence[Member], d_in: int, device: torch.device, multilabel: bool,
              distils: bool) -> Callable[[torch.nn.Module, list[torch.Tensor], torch.Tensor],
                                         torch.Tensor]:
    """Eq. 1 per member and row, ``rho * task + (1 - rho) * KD(T)``, for the engine: the
    members' rho and temperature as columns, their input masks applied to the
    standardised rows, the soft labels the batch's third array when ``distils``."""
    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)[:, None]  # (S, 1)

    rho, temperature = column([m.rho for m in members]), column([m.temperature
                                                                 for m in members])
    keep = None
    if any(m.keep is not None for m in members):
        keep = torch.stack([torch.ones(d_in, dtype=torch.bool) if m.keep is None else
                            torch.as_tensor(m.keep, dtype=torch.bool) for m in members])
        keep = keep[:, None, :].to(device)  # (S, 1, d)

    def loss_rows(module: torch.nn.Module, batch: list[torch.Tensor],
                  alive: torch.Tensor) -> torch.Tensor:
        x, y = batch[0], batch[1]  # x standardised
        if keep is not None:
            x = torch.where(keep[alive], x, 0.0)
        logits = module(x, standardised=True)  # (S, b, K)
        loss = task_loss_rows(logits, y, multilabel)  # (S, b)
        if not distils:
            return loss
        r, t = rho[alive], temperature[alive]
        return r * loss + (1 - r) * kd_loss_rows(logits, batch[2], t, multilabel)

    return loss_rows


def stack(nets: Sequence[torch.nn.Module]) -> torch.nn.Module:
    """The members as one module: MLPs stacked by :class:`Stacked`, architectures by
    :class:`StackedNetworks`."""
    return StackedNetworks(nets) if isinstance(nets[0], ArchNet) else Stacked(nets)


def network_bytes(d_in: int, hidden: Sequence[int], n_classes: int, batch_size: int) -> int:
    """Bytes one network takes to train: its weights four times (weights, gradients,
    Adam's two moments) and a minibatch of activations and their gradients."""
    params = parameter_count(d_in, hidden, n_classes)
    return 4 * (4 * params + 3 * batch_size * (d_in + sum(hidden) + n_classes))


def require_trainable(d_in: int, options: TrainOptions, n_classes: int,
                      device: torch.device, role: str) -> None:
    """Refuse, before any work, a ``role`` network (a teacher, a student) of
    ``options.hidden`` on ``d_in`` inputs that cannot be trained in memory."""
    hidden = options.hidden or ()
    require_memory(network_bytes(d_in, hidden, n_classes, options.batch_size),
                   f"a {role} of --hidden {','.join(map(str, hidden)) or 0} on {d_in} "
                   "inputs", device)


# Bytes one stacked fit may take on the CPU (on CUDA: a quarter of the free memory).
STACK_BYTES_CPU = 1 << 30


def members_per_fit(d_in: int, hidden: Sequence[int], n_classes: int, batch_size: int,
                    device: torch.device) -> int:
    """How many members one stacked fit may hold: each costs its weights four times
    (weights, gradients, Adam's two moments) and a minibatch of activations and their
    gradients."""
    return stack_limit(network_bytes(d_in, hidden, n_classes, batch_size), device)


def stack_limit(per_member: int, device: torch.device) -> int:
    """How many members of ``per_member`` bytes one stacked fit may hold on ``device``."""
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 4
    else:
        budget = STACK_BYTES_CPU
    return max(1, budget // per_member)


class SoftLabels:
    """The teachers' logits on the training rows, ``(n, T, K)``: in memory, or in a
    scratch ``.npy`` file (memory-mapped, deleted on :meth:`close`) when the rows are
    streamed, so the logits of a large data set never sit in RAM."""

    def __init__(self, n_rows: int, n_teachers: int, n_classes: int, streamed: bool):
        shape = (n_rows, n_teachers, n_classes)
        self._dir = None
        if streamed:
            self._dir = tempfile.TemporaryDirectory(prefix="cmkd-soft-")
            self.array = np.lib.format.open_memmap(Path(self._dir.name) / "soft.npy", "w+",
                                                   np.float32, shape)
        else:
            self.array = np.zeros(shape, dtype=np.float32)

    def fill(self, column: int, teacher: torch.nn.Module, rows: Rows,
             parts: Sequence[np.ndarray]) -> None:
        """Write ``teacher``'s logits on the rows of ``parts`` into ``column``."""
        for index in parts:
            if not len(index):
                continue
            source = RowSet([rows.x], index, rows.device, rows.plan())
            for start, (x,) in source.chunks():
                logits = predict(teacher, x)
                if not torch.isfinite(logits).all():
                    bad = int((~torch.isfinite(logits)).any(-1).sum())
                    raise InputError(f"the teacher's logits are NaN or Inf on {bad} of the "
                                     f"{len(x)} rows it was given: no student can learn "
                                     "from them; check the teacher and its input features")
                self.array[index[start : start + len(x)], column] = logits.cpu().numpy()
                if self._dir is not None:  # written pages leave this process's memory
                    self.array.flush()
                    release(self.array)

    def fill_targets(self, column: int, targets: Callable[[np.ndarray], np.ndarray],
                     rows: Rows, parts: Sequence[np.ndarray]) -> None:
        """Write ``targets(y)``, logits made from the labels alone (the knowledge-free
        control, :mod:`cmkd_doctor.teachers.control`), into ``column``."""
        step = max(1, plan_chunk_rows(len(rows.y), row_bytes([rows.y]), rows.device, None))
        for index in parts:
            for start in range(0, len(index), step):
                part = index[start : start + step]
                self.array[part, column] = targets(np.asarray(rows.y[part]))
            if self._dir is not None:
                self.array.flush()
                release(self.array)

    def close(self) -> None:
        if self._dir is not None:
            del self.array
            self._dir.cleanup()
