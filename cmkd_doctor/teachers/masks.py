"""Teachers of different gamma from one ranking (paper Sec. 5.1 (4), Sec. 5.4, App. B.4).

A modality-general teacher nullifies the r% channels with the smallest salience, a
modality-specific one the r% with the largest, a random one r% chosen at random. A
regular teacher nullifies nothing. Nullification is applied to the features the teacher
receives: a nullified channel is replaced by its training mean or by zero. With
``refit`` the teacher is retrained on the masked features instead (Sec. 5.1: "train a
modality-general teacher by only keeping feature channels with large salience values").

Every teacher is a :class:`Teacher`: a mask in front of a base model, which is a
cmkd-doctor network or any ONNX model mapping features ``(n, d)`` to logits ``(n, K)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmkd_doctor.choices import DERIVED, FILLS, MFH_ORDER, MODES  # noqa: F401 - re-exported
from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.io.files import regular_file
from cmkd_doctor.io.inputs import sha256_of
from cmkd_doctor.io.outputs import write_atomic, write_json, write_safetensors
from cmkd_doctor.ranking.groups import unit_choice
from cmkd_doctor.schemas import stamp
from cmkd_doctor.seeds import generator
from cmkd_doctor.teachers.programs import in_batches
from cmkd_doctor.training.mlp import FORMAT as NET_FORMAT
from cmkd_doctor.training.mlp import Net, config_from, load_net, read_checkpoint
from cmkd_doctor.validation import whole

SOURCES = ("trained", "aligned")
FORMAT = "cmkd-doctor/teacher-v1"


def n_nullified(ratio: float, d: int) -> int:
    """``round(ratio * d)``, halves rounded up."""
    return int(math.floor(ratio * d + 0.5))


def check_ratio(ratio: float, d: int, what: str = "channels") -> int:
    """The number of channels ``ratio`` nullifies of ``d``; it must be some but not all
    (``what`` names the d channels in the message)."""
    k = n_nullified(ratio, d)
    if k == 0 or k == d:
        raise option_error("ratio", f"a ratio that nullifies between 1 and {d - 1} of the "
                           f"{d} {what} (round({ratio:g} * {d}) = {k})", ratio)
    return k


# A mode picks the k channels to nullify from the salience (ties broken by channel index,
# a stable sort); the generator serves the random mode.
# the names and descriptions are declared in cmkd_doctor.choices
MODES.add("regular", None)


@MODES.register("general")
def _general(salience: np.ndarray, k: int, seed: int) -> np.ndarray:
    return np.argsort(salience, kind="stable")[:k]


@MODES.register("specific")
def _specific(salience: np.ndarray, k: int, seed: int) -> np.ndarray:
    return np.argsort(-np.asarray(salience), kind="stable")[:k]


@MODES.register("random")
def _random(salience: np.ndarray, k: int, seed: int) -> np.ndarray:
    return torch.randperm(len(salience), generator=generator(seed, "random_mask"))[:k].numpy()




def nullified_channels(salience: np.ndarray, mode: str, ratio: float, seed: int = 0,
                       constant: np.ndarray | list[int] = (),
                       groups: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of the channels a teacher of ``mode`` nullifies.

    The ``constant`` channels (constant on the fit rows: they carry nothing) are always
    nullified by a derived teacher, a no-op, and ``ratio`` counts only the informative
    ones: exactly ``round(ratio * informative)`` of those are chosen, or none for
    ``regular``. Ties in salience are broken by channel index (stable sort).

    With ``groups`` (a group id per channel, from ``rank --groups``) whole groups are
    nullified: the mode orders the groups by their salience and takes them until
    ``round(ratio * informative)`` channels are reached (more when the last group is
    large, never every group).
    """
    choose = MODES[mode]
    if choose is None:
        return np.empty(0, dtype=np.int64)
    constant = np.unique(np.asarray(constant, dtype=np.int64))
    informative = np.setdiff1d(np.arange(len(salience)), constant)
    d = len(informative)
    if not 0 < ratio < 1:
        raise option_error("ratio", "a number in (0, 1)", ratio)
    k = check_ratio(ratio, d, "informative channels" if len(constant) else "channels")
    if groups is None:
        chosen = informative[choose(np.asarray(salience)[informative], k, seed)]
        return np.union1d(chosen, constant).astype(np.int64)
    ids = np.asarray(groups)[informative]
    units, first = np.unique(ids, return_index=True)
    if len(units) < 2:
        raise InputError("the ranked channels form one group (rank --groups): a derived "
                         "teacher would nullify all of them; rank with a higher "
                         "--group-threshold or other --groups")
    order = choose(np.asarray(salience)[informative][first], len(units), seed)
    taken = units[unit_choice(order, np.bincount(np.searchsorted(units, ids)), k)]
    chosen = informative[np.isin(ids, taken)]
    return np.union1d(chosen, constant).astype(np.int64)


# What a nullified channel becomes, from the per-channel mean of the teacher's training
# rows (d,).
FILLS.add("mean", lambda mean: mean)
FILLS.add("zero", torch.zeros_like)


def derived_mask(run: Any, spec: TeacherSpec, rows: Any
                 ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The mask ``spec`` asks for on ``run``'s ranking: the nullified channels (sorted),
    the keep mask ``(d,)`` and each channel's fill (``spec.fill`` of the teacher
    modality's means on the training rows, ``rows`` read in chunks when streamed).
    ``run`` is a loaded rank run (:class:`~cmkd_doctor.io.rundir.Run`) and ``rows`` its
    features (:class:`~cmkd_doctor.training.stacked.Rows`); the run directory saves
    teachers through this module, so their types are not imported here."""
    nullified = nullified_channels(run.salience, spec.mode, spec.ratio, spec.seed,
                                   run.constant, groups=run.groups)
    keep = np.ones(len(run.salience), dtype=bool)
    keep[nullified] = False
    mean, _ = rows.part(run.split.train).moments(0)
    return nullified, keep, FILLS[spec.fill](mean)


def fill_values(x_train: torch.Tensor, how: str) -> torch.Tensor:
    """``(d,)`` values that replace nullified channels, from the training rows."""
    return FILLS[how](x_train.mean(0))


class OnnxModel(nn.Module):
    """An ONNX model mapping ``(n, d)`` float32 features to logits, run by onnxruntime.

    Uses the CUDA execution provider when onnxruntime offers it, else the CPU.
    """

    def __init__(self, path: str | Path, d_in: int | None = None,
                 n_classes: int | None = None):
        super().__init__()
        from cmkd_doctor.teachers.model_runs import OnnxSession, read_onnx

        self.path = regular_file(path)
        # checked before it runs; run where a signal or the time limit can stop it
        self.session = OnnxSession(read_onnx(path, str(path)), str(path))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(f"{path}: the ONNX model takes {len(inputs)} inputs; a teacher "
                             "takes one, the features (n, d)")
        self.input_name = inputs[0].name
        if inputs[0].type not in _FLOAT_INPUTS:
            raise InputError(f"{path}: the ONNX model's input is {inputs[0].type}; a teacher "
                             "takes float features (n, d): export it with a float input")
        self.dtype = _FLOAT_INPUTS[inputs[0].type]
        # a model exported without its input shape recorded is taken as (n, d) and probed
        shape = list(inputs[0].shape or [None, None])
        if len(shape) != 2:
            raise InputError(f"{path}: the ONNX model's input has shape {shape}; a teacher "
                             "takes features (n, d)")
        # a batch dimension fixed when the model was exported (often 1): rows are fed in
        # batches of exactly that size
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if d_in is not None and isinstance(shape[1], int) and shape[1] != d_in:
            raise InputError(f"{path}: the ONNX model takes {shape[1]} features per row but "
                             f"the teacher's modality has {d_in}")
        self.provider = self.session.get_providers()[0]
        if n_classes is not None:
            probe = self(torch.zeros(1, d_in or shape[1]))
            if probe.ndim != 2 or probe.shape[1] != n_classes:
                raise InputError(f"{path}: the ONNX model outputs shape "
                                 f"{tuple(probe.shape)} per row batch; expected logits (n, "
                                 f"{n_classes}) for the {n_classes} classes")
            if not torch.isfinite(probe).all():
                raise InputError(f"{path}: the ONNX model's logits on a probe row of zeros "
                                 "are NaN or Inf; a teacher must give finite logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def run(rows: torch.Tensor) -> torch.Tensor:
            out = self.session.run({self.input_name: rows.numpy().astype(
                self.dtype, copy=False)})[0]
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

        return in_batches(run, self.batch)(x.detach().to("cpu", torch.float32)).to(x.device)


# ONNX input types a teacher can take, and the NumPy type rows are fed as
_FLOAT_INPUTS = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(float16)": np.float16}


class Teacher(nn.Module):
    """Nullify channels, then run the base model: ``base(where(keep, x, fill))``."""

    def __init__(self, base: nn.Module, keep: torch.Tensor, fill: torch.Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("keep", keep.bool())
        self.register_buffer("fill", fill.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(torch.where(self.keep, x, self.fill))


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher is derived with; its name is its file name in ``teachers/``.

    Attributes
    ----------
    mode, ratio
        See :data:`MODES`; ``ratio`` is ignored (stored as 0) for ``regular``.
    fill
        See :data:`FILLS`.
    source
        ``trained`` (a regular teacher trained on modality a with CE), ``aligned``
        (rank's f1) or a checkpoint path (``.safetensors`` network or ``.onnx``).
    refit
        Retrain on the masked features instead of only masking.
    """

    mode: str = "general"
    ratio: float = 0.5
    fill: str = "mean"
    source: str = "trained"
    refit: bool = False
    seed: int = 0

    def checked(self) -> TeacherSpec:
        MODES.check(self.mode)
        FILLS.check(self.fill)
        whole("seed", self.seed, 0)
        if self.mode != "regular" and (not isinstance(self.ratio, (int, float))
                                       or not 0 < self.ratio < 1):
            raise option_error("ratio", "a number in (0, 1)", self.ratio)
        if self.source not in SOURCES:
            path = Path(self.source)
            if path.suffix.lower() not in (".safetensors", ".onnx"):
                raise option_error("from", "trained, aligned, or a .safetensors or .onnx "
                                   "teacher checkpoint", self.source)
            regular_file(path, self.source)
        # Fields that cannot change the teacher are normalised, so saved ones are reused.
        spec = self
        if spec.mode == "regular":
            spec = replace(spec, ratio=0.0, fill="mean", refit=False)
        if not (spec.mode == "random" or spec.refit or spec.source == "trained"):
            spec = replace(spec, seed=0)
        return spec

    @classmethod
    def given(cls, mode: str = "general", ratio: float = 0.5, fill: str = "mean",
              source: str = "trained", teacher: str | None = None, refit: bool = False,
              seed: int = 0) -> TeacherSpec:
        """The spec of ``derive-teacher``'s options: ``teacher`` (a checkpoint path) is
        another way to give ``source``, and only one of them may be given."""
        if teacher is not None:
            if source != "trained":
                raise InputError("--teacher and --from both name the source; give one")
            source = teacher
        return cls(mode=mode, ratio=ratio, fill=fill, source=source, refit=refit,
                   seed=seed).checked()

    @property
    def name(self) -> str:
        name = self.mode if self.mode == "regular" else f"{self.mode}-r{self.ratio:g}"
        if self.source == "aligned":
            name += "-aligned"
        elif self.source != "trained":
            name += "-" + Path(self.source).stem
        if self.refit:
            name += "-refit"
        if self.fill == "zero" and self.mode != "regular":
            name += "-zero"
        if self.seed and (self.mode == "random" or self.refit or self.source == "trained"):
            name += f"-s{self.seed}"
        return name

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.source not in SOURCES:
            out["source"] = str(Path(self.source).resolve())
            out["source_sha256"] = sha256_of(Path(self.source))
        return out


def load_base(path: str | Path, d_in: int, n_classes: int, device: torch.device
              ) -> nn.Module:
    """A user checkpoint as a base model: a cmkd-doctor ``.safetensors`` or any ``.onnx``."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxModel(path, d_in, n_classes)
    if path.suffix.lower() != ".safetensors":
        raise InputError(f"{path}: a teacher checkpoint must be .safetensors or .onnx")
    teacher, _ = load_teacher(path, device)
    if isinstance(teacher.base, Net):
        config = teacher.base.config
        if config.d_in != d_in or config.n_out != n_classes:
            raise InputError(f"{path}: the network maps {config.d_in} features to "
                             f"{config.n_out} classes; this run needs {d_in} -> {n_classes}")
    # a bare network needs no mask; a derived teacher keeps its own in front
    return teacher.base if bool(teacher.keep.all()) else teacher


def save_teacher(teacher: Teacher, path: Path, sidecar: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors: mask, fill, network) and ``path.json``: the sidecar
    with the network file's SHA-256, so a stale or foreign network is never taken for
    the one it describes."""
    tensors = {"keep": teacher.keep.to(torch.uint8), "fill": teacher.fill}
    meta = {"format": FORMAT, "spec": json.dumps(sidecar.get("spec", {}))}
    if isinstance(teacher.base, Net):
        tensors.update({f"net.{k}": v for k, v in teacher.base.state_dict().items()})
        meta["config"] = json.dumps(asdict(teacher.base.config))
    elif isinstance(teacher.base, OnnxModel):
        meta["onnx"] = str(teacher.base.path.resolve())
        meta["onnx_sha256"] = sha256_of(teacher.base.path)
    else:
        raise InputError(f"{path}: a teacher derived from another derived teacher cannot be "
                         "saved; derive from its source instead")
    write_safetensors(path, tensors, meta)
    if path.is_file():  # under torchrun only rank 0 writes
        write_json(path.with_suffix(".json"),
                   stamp("teacher", {**sidecar, "sha256": sha256_of(path)}))
    return path


def load_teacher(path: str | Path, device: torch.device | str = "cpu"
                 ) -> tuple[Teacher, dict[str, str]]:
    """Load a teacher written by :func:`save_teacher`, or a bare cmkd-doctor network."""
    path = Path(path)
    state, meta = read_checkpoint(path, device)
    fmt = meta.get("format")
    if fmt == NET_FORMAT:
        net, _ = load_net(path, device)
        d = net.config.d_in
        return Teacher(net, torch.ones(d, dtype=torch.bool, device=device),
                       torch.zeros(d, device=device)), meta
    if fmt != FORMAT:
        raise InputError(f"{path}: not a cmkd-doctor teacher or network (metadata format "
                         f"{fmt!r}); pass other frameworks' models as .onnx")
    if "config" in meta:
        base: nn.Module = Net(config_from(meta)).to(device)
        base.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        base.eval()
    else:
        onnx_path = Path(meta["onnx"])
        if not onnx_path.is_file():
            raise InputError(f"{path}: its ONNX model {onnx_path} is missing")
        base = OnnxModel(onnx_path)
    return Teacher(base, state["keep"].bool(), state["fill"]), meta


def export_onnx(teacher: Teacher, path: str | Path, d_in: int) -> Path:
    """Write ``teacher``, its mask baked in, as ONNX: input ``features (n, d)``, output
    ``logits (n, K)``, for use in the user's own training code."""
    if not isinstance(teacher.base, Net):
        raise InputError("--export-onnx: only teachers built on a cmkd-doctor network can be "
                         "exported (an ONNX source already is ONNX: apply the mask in front)")
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise InputError("--export-onnx needs the onnx extra: pip install "
                         "'cmkd-doctor[onnx]'") from None
    import logging
    import warnings

    module = Teacher(Net(teacher.base.config), teacher.keep.cpu(), teacher.fill.cpu())
    module.base.load_state_dict({k: v.cpu() for k, v in teacher.base.state_dict().items()})
    module.eval()
    example = torch.zeros(2, d_in)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (example,), input_names=["features"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("n")},), dynamo=True, verbose=False)
    finally:
        quiet.setLevel(level)
    return write_atomic(Path(path), lambda tmp: program.save(str(tmp)))
