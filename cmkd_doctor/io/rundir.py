"""The run directory (``cmkd-out`` by default): every path in it, every load and save,
and the provenance stamped into every file.

``rank`` writes ``salience.npy``, ``permuted_distances.npy``, ``split.npz``, the two
aligned networks and, last, ``rank.json``: inputs with checksums, options, versions,
timings, metrics, a fresh ``run_id``, and the SHA-256 of every file it vouches for.
Teachers go to ``teachers/`` (a ``.safetensors`` and a JSON sidecar each), student
comparisons to ``distill.json``, a built-in example's arrays to ``example/`` and report
images to ``report/``. Every file carries the ``run_id`` of the ranking it belongs to,
so a teacher or a result from an earlier ranking in the same folder is never used.

Writing goes through transactions (:meth:`RunDir.transaction`): a command builds its
files in a staged copy of the folder and they land together, in one step, when it ends;
interrupted, killed or out of disk, the run directory is left byte-identical.

Reading goes through one guarded loader: a damaged, foreign or mismatched file is an
:class:`~cmkd_doctor.errors.InputError` naming it (exit 2), never an internal error.
"""

from __future__ import annotations

import io
import json
import platform
import sys
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError

from cmkd_doctor import __version__, distributed
from cmkd_doctor.devices import require_memory
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.files import human_size, regular_file
from cmkd_doctor.io.inputs import PairedData, load_paired, sha256_of
from cmkd_doctor.io.outputs import (
    DEFAULT_RUN,
    check_out_dir,
    staging,
    write_bytes,
    write_json,
    write_npy,
)
from cmkd_doctor.io.splits import Split, fit_and_validation
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.ranking.run import RankOptions, RankResult, rank
from cmkd_doctor.schemas import check as check_schema
from cmkd_doctor.schemas import stamp
from cmkd_doctor.training.mlp import Net, load_net, save_net
from cmkd_doctor.training.stacked import Rows
from cmkd_doctor.wording import rank_warnings, reliability

if TYPE_CHECKING:
    from cmkd_doctor.diagnosis.comparison import Comparison
    from cmkd_doctor.teachers.masks import Teacher

T = TypeVar("T")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware a result was obtained with."""
    env = {"cmkd_doctor": __version__, "python": sys.version.split()[0],
           "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform(), "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _digest_or_none(path: Path) -> str | None:
    try:
        return sha256_of(path)
    except OSError:
        return None


class RunDir:
    """A run directory: its files, how they are written, and how they are read back.

    Parameters
    ----------
    path
        The folder (``--out`` of rank and diagnose, ``--run`` of the later commands).
    """

    RANK = {
        "salience": "salience.npy",
        "permuted_distances": "permuted_distances.npy",
        "split": "split.npz",
        "net_a": "net_a.safetensors",
        "net_b": "net_b.safetensors",
    }
    DOCUMENT = "rank.json"
    DISTILL = "distill.json"
    TEACHERS = "teachers"
    #: what belongs to one ranking: a new ranking replaces all of it
    RANKING = frozenset({*RANK.values(), DOCUMENT, TEACHERS, DISTILL})

    def __init__(self, path: str | Path = DEFAULT_RUN, home: Path | None = None):
        self.path = Path(path)
        self.home = home  # set on a staged folder: the run directory it will become
        self._on_commit: list[Callable[[RunDir], None]] = []

    def __str__(self) -> str:
        return str(self.public(self.path))

    def public(self, path: str | Path) -> Path:
        """Where ``path``, in this folder, is once the transaction holding it lands (the
        path itself outside a transaction or outside this folder)."""
        path = Path(path)
        if self.home is None:
            return path
        try:
            return self.home / path.resolve().relative_to(self.path.resolve())
        except ValueError:
            return path

    @contextmanager
    def transaction(self, drop: Collection[str] = frozenset()) -> Iterator[RunDir]:
        """A staged copy of this run directory to read and write in, landing as a whole
        when the block ends without an error (see :func:`staging`); already staged, the
        block joins the transaction it is in.

        ``drop`` names top-level entries the new version goes without (a new ranking
        drops :attr:`RANKING`). A transaction that keeps ``rank.json`` builds on that
        ranking, and does not land if another command replaced it meanwhile. Under
        torchrun only rank 0 stages and writes; the others read the folder as it is.
        """
        if self.home is not None or not distributed.is_main():
            yield self
            return
        if self.DOCUMENT not in drop:
            self.read_document()  # nothing to build on: refused before anything is made
        ranking = _digest_or_none(self.document_path)
        staged: RunDir | None = None

        def at_commit(folder: Path) -> None:
            if self.DOCUMENT not in drop and _digest_or_none(self.document_path) != ranking:
                raise InputError(f"{self.path}: ranked again by another command while this "
                                 "one ran; nothing was written; rerun it on the new ranking")
            landing = RunDir(folder, home=self.path)
            for action in staged._on_commit:
                action(landing)

        with staging(self.path, drop, at_commit) as stage:
            staged = RunDir(stage, home=self.path)
            yield staged

    # -- paths -------------------------------------------------------------------------
    def file(self, key: str) -> Path:
        """A file of the ranking by key (``salience``, ``split``, ``net_a``, ...)."""
        return self.path / self.RANK[key]

    @property
    def document_path(self) -> Path:
        return self.path / self.DOCUMENT

    @property
    def distill_path(self) -> Path:
        return self.path / self.DISTILL

    @property
    def teachers_dir(self) -> Path:
        return self.path / self.TEACHERS

    @property
    def example_dir(self) -> Path:
        """Where ``diagnose --example`` writes the example's arrays."""
        return self.path / "example"

    @property
    def report_dir(self) -> Path:
        """Where ``report --format md`` puts its images when no ``--out`` is given."""
        return self.path / "report"

    def teacher_path(self, name: str) -> Path:
        return self.teachers_dir / f"{name}.safetensors"

    def check_writable(self, option: str = "--out") -> RunDir:
        """Fail early, before any work, if the folder cannot be written."""
        check_out_dir(self.path, option)
        return self

    # -- writing -----------------------------------------------------------------------
    def check_replaceable(self, option: str = "--out") -> RunDir:
        """Fail early if a new ranking could not replace this folder as a whole: it must
        be writable and neither the current folder nor one holding it."""
        self.check_writable(option)
        here, target = Path.cwd().resolve(), self.path.resolve()
        if here == target or target in here.parents:
            raise InputError(f"{option} {self.path}: the run directory cannot be the current "
                             "folder or hold it (a new ranking replaces it as a whole); "
                             "pick a subfolder such as cmkd-out")
        return self

    def write_rank(self, result: RankResult, data: PairedData) -> dict[str, Any]:
        """Write a ``rank`` run, all or nothing; returns the ``rank.json`` document.

        The files are built in a transaction (:meth:`transaction`) that drops the old
        ranking (its files, teachers and results) and keeps everything else; it lands in
        one step. Interrupted, killed or out of disk before that step, the old run
        directory is untouched and the staging folder is removed. ``rank.json``, written
        last, vouches for the other files by their checksums.
        """
        run_id = distributed.from_main(uuid.uuid4().hex)  # one id for every process
        if not distributed.is_main():
            return rank_document(result, data, run_id)  # only rank 0 writes
        with self.transaction(drop=self.RANKING) as staged:
            return staged._write_rank(result, data, run_id)

    def _write_rank(self, result: RankResult, data: PairedData, run_id: str
                    ) -> dict[str, Any]:
        document = rank_document(result, data, run_id)
        for info in document["inputs"].values():  # an example's arrays staged with the run
            info["path"] = str(self.public(info["path"]).absolute())
        # what to try when the ranking's own checks fail: rank again, as a command
        from cmkd_doctor.diagnosis.advice import rank_steps

        document["advice"] = [step.to_dict() for step in rank_steps(self.public(self.path),
                                                                    document)]
        meta = {"role": "aligned", "options": json.dumps(document["options"]),
                "inputs": json.dumps(document["inputs"]), "cmkd_doctor": __version__,
                "run_id": run_id,
                "standardized": json.dumps(result.options.standardize)}
        write_npy(self.file("salience"), result.salience.astype(np.float32))
        write_npy(self.file("permuted_distances"), result.distances)
        buffer = io.BytesIO()
        np.savez(buffer, train=result.split.train, test=result.split.test)
        write_bytes(self.file("split"), buffer.getvalue())
        save_net(result.net_a, self.file("net_a"), {**meta, "modality": "a"})
        save_net(result.net_b, self.file("net_b"), {**meta, "modality": "b"})
        document["files"] = {name: sha256_of(self.path / name) for name in self.RANK.values()
                             if (self.path / name).is_file()}
        write_json(self.document_path, document)
        return document

    def write_teacher(self, teacher: Teacher, name: str, sidecar: dict[str, Any]) -> Path:
        """``teachers/NAME.safetensors`` and its sidecar (see
        :func:`cmkd_doctor.teachers.masks.save_teacher`), landing together; returns where the
        network is once its transaction lands."""
        from cmkd_doctor.teachers.masks import save_teacher

        with self.transaction() as staged:
            return staged.public(save_teacher(teacher, staged.teacher_path(name), sidecar))

    def record(self, comparison: Comparison) -> Path:
        """Add the comparison's rows to ``distill.json``, keyed by teacher, ratio and
        options. Results of another ranking (another ``run_id``) are dropped, never mixed
        with the new ones. In a transaction the rows are added as it lands, to the
        ``distill.json`` there is then, so side-by-side commands each keep theirs."""
        with self.transaction() as staged:
            staged._on_commit.append(lambda landing: landing._record(comparison))
        return self.public(self.distill_path)

    def _record(self, comparison: Comparison) -> Path:
        rank = {"run_id": comparison.run_id}
        document = {"command": "distill", "rank": rank, "results": {}}
        previous = self.read_distill()
        if previous is not None and previous.get("rank") == rank:
            document = previous
        created = now()
        for row in comparison.rows:
            ratio = "" if row.ratio is None else f"{row.ratio:g}"
            document.setdefault("results", {})[f"{row.teacher}|{ratio}|{comparison.key}"] = {
                **row.to_dict(comparison.versus(row)), "options": comparison.options,
                "options_key": comparison.key, "created": created}
        document["last_verdict"] = comparison.verdict
        document["last_advice"] = comparison.advice
        document["last_options_key"] = comparison.key
        document["last_timings"] = comparison.timings
        document["cmkd_doctor"] = __version__
        return write_json(self.distill_path, stamp("distill", document))

    # -- reading -----------------------------------------------------------------------
    def guarded(self, path: Path, read: Callable[[Path], T]) -> T:
        """``read(path)``, with a file that cannot be read as it should (:data:`DAMAGED`)
        turned into one ``InputError`` naming the file; any other exception is a bug in
        the reader and propagates as one."""
        try:
            return read(path)
        except InputError:
            raise
        except FileNotFoundError:
            raise InputError(f"{path}: missing from the run directory {self.path}; rerun "
                             "'cmkd-doctor rank'") from None
        except DAMAGED as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{path}: damaged or not written by cmkd-doctor ({reason}); "
                             "rerun 'cmkd-doctor rank'") from exc

    def read_json(self, path: Path, schema: str | None = None) -> Any:
        """A JSON file of the run: strict (``NaN`` and ``Infinity``, which cmkd-doctor never
        writes, are refused) and, with ``schema``, checked against that shipped schema
        and version (:func:`cmkd_doctor.schemas.check`), so a field edited or damaged is
        exit 2 naming the file and the field."""
        def read(p: Path) -> Any:
            size = regular_file(p).stat().st_size
            if size > MAX_DOCUMENT_BYTES:  # refused before a byte is read
                raise InputError(f"{p}: {human_size(size)}, more than any document "
                                 f"cmkd-doctor writes (it reads at most "
                                 f"{human_size(MAX_DOCUMENT_BYTES)}): damaged? rerun "
                                 "'cmkd-doctor rank'")
            # the text, its bytes and the parsed objects: about four times the file
            require_memory(4 * size, f"{p} ({human_size(size)})", torch.device("cpu"))
            document = json.loads(p.read_text(), parse_constant=_no_constant)
            if schema is not None:
                check_schema(schema, document)
            return document

        return self.guarded(path, read)

    def read_document(self, option: str = "--run") -> dict[str, Any]:
        """``rank.json``, checked: its schema, and the fields later commands rely on."""
        if not self.document_path.is_file():
            raise InputError(f"{option} {self.path}: no rank run there ({self.DOCUMENT} is "
                             "missing); run 'cmkd-doctor rank' first or pass --run DIR")
        document = self.read_json(self.document_path, "rank")
        self.guarded(self.document_path, lambda _: _check_document(document))
        return document

    def verify(self, document: dict[str, Any]) -> None:
        """Every file ``rank.json`` vouches for is the one it wrote (same SHA-256)."""
        for name, digest in document["files"].items():
            path = self.path / name
            if not path.is_file():
                raise InputError(f"{path}: missing from the run directory {self.path}; "
                                 "rerun 'cmkd-doctor rank'")
            if sha256_of(path) != digest:
                raise InputError(f"{path}: not the file rank.json describes (another run's, "
                                 "or changed since); rerun 'cmkd-doctor rank'")

    def read_salience(self, document: dict[str, Any]) -> np.ndarray:
        def read(path: Path) -> np.ndarray:
            salience = np.load(path, allow_pickle=False)
            side = "feats_a" if document["permuted_modality"] == "a" else "feats_b"
            d = int(np.prod(document["inputs"][side]["shape"][1:]))
            if salience.shape != (d,) or not np.issubdtype(salience.dtype, np.floating):
                raise ValueError(f"expected float salience of shape ({d},), got "
                                 f"{salience.dtype} {salience.shape}")
            return salience
        return self.guarded(self.file("salience"), read)

    def read_distances(self) -> np.ndarray:
        return self.guarded(self.file("permuted_distances"),
                            lambda p: np.load(p, allow_pickle=False))

    def read_split(self, n_rows: int) -> Split:
        def read(path: Path) -> Split:
            with np.load(path, allow_pickle=False) as archive:
                train, test = archive["train"], archive["test"]
            for rows in (train, test):
                if rows.ndim != 1 or rows.dtype.kind not in "iu" or (
                        len(rows) and (rows.min() < 0 or rows.max() >= n_rows)):
                    raise ValueError(f"row indices outside 0..{n_rows - 1}")
            return Split(train.astype(np.int64), test.astype(np.int64))
        return self.guarded(self.file("split"), read)

    def read_net(self, side: str, device: torch.device | str = "cpu") -> Net:
        return self.guarded(self.file(f"net_{side}"), lambda p: load_net(p, device)[0])

    def read_distill(self) -> dict[str, Any] | None:
        """``distill.json``, or ``None`` when there is none yet (see :func:`last_call`
        for the rows that go with its verdict)."""
        if not self.distill_path.is_file():
            return None
        document = self.read_json(self.distill_path, "distill")
        if not isinstance(document, dict) or not isinstance(document.get("results"), dict):
            raise InputError(f"{self.distill_path}: damaged or not written by cmkd-doctor "
                             "(no 'results' mapping); delete it and rerun 'cmkd-doctor "
                             "distill'")
        return document

    def teacher_sidecars(self, run_id: str) -> list[dict[str, Any]]:
        """The sidecars of the teachers derived from ranking ``run_id``."""
        found = []
        for path in sorted(self.teachers_dir.glob("*.json")):
            sidecar = self.read_json(path, "teacher")
            if isinstance(sidecar, dict) and (sidecar.get("rank") or {}).get("run_id") == run_id:
                found.append(sidecar)
        return found

    def saved_teacher(self, name: str, wanted: dict[str, Any], device: torch.device
                      ) -> tuple[Teacher, dict[str, Any]] | None:
        """The saved teacher ``name`` when its sidecar matches ``wanted`` (spec, training
        options and ranking) and its network is the one the sidecar describes."""
        from cmkd_doctor.teachers.masks import load_teacher

        path = self.teacher_path(name)
        sidecar_path = path.with_suffix(".json")
        if not (path.is_file() and sidecar_path.is_file()):
            return None
        sidecar = self.read_json(sidecar_path, "teacher")
        if not isinstance(sidecar, dict) or any(sidecar.get(k) != v for k, v in wanted.items()):
            return None
        if sidecar.get("sha256") != sha256_of(path):
            return None
        teacher, _ = self.guarded(path, lambda p: load_teacher(p, device))
        return teacher, sidecar

    def load(self, option: str = "--run") -> Run:
        """Read the ranking back; its files and its inputs must not have changed since."""
        document = self.read_document(option)
        self.verify(document)
        inputs = document["inputs"]
        specs = {}
        for name, info in inputs.items():
            if not Path(info["path"]).is_file():
                raise InputError(f"{info['path']}: the {name} file ranked in {self.path} "
                                 "is gone")
            specs[name] = info["path"] + (f":{info['key']}" if info.get("key") else "")
        data = load_paired(specs["feats_a"], specs["feats_b"], specs["labels"])
        for name, info in data.files.items():
            if info.sha256 != inputs[name]["sha256"]:
                raise InputError(f"{info.source}: changed since 'cmkd-doctor rank' wrote "
                                 f"{self.path} (sha256 differs); rerun rank")
        return self.run_of(document, data)

    def run_of(self, document: dict[str, Any], data: PairedData) -> Run:
        """The run of a document and the data it ranked (already verified)."""
        return Run(self, document, self.read_salience(document), self.read_split(data.n),
                   data)


#: what readers raise on a file that is damaged or not cmkd-doctor's: numpy, json and
#: zip (ValueError, OSError, EOFError, BadZipFile, KeyError for a missing member),
#: safetensors (SafetensorError), torch (RuntimeError for mismatched tensors), and the
#: fields of a document of the wrong shape (TypeError, IndexError)
DAMAGED = (ValueError, OSError, EOFError, KeyError, IndexError, TypeError, RuntimeError,
           zipfile.BadZipFile, SafetensorError)


# the largest run document read: rank.json and the sidecars hold kilobytes, distill.json
# grows by tens of kilobytes per distill call
MAX_DOCUMENT_BYTES = 256 << 20


def _no_constant(name: str) -> None:
    raise ValueError(f"holds {name}, which cmkd-doctor never writes")


_REQUIRED = {
    "command": str, "run_id": str, "created": str, "inputs": dict, "labels": dict,
    "options": dict, "permuted_modality": str, "unpermuted_distance": (int, float),
    "files": dict, "aligned": dict,
}


def _check_document(document: Any) -> None:
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    for key, kind in _REQUIRED.items():
        if not isinstance(document.get(key), kind):
            raise ValueError(f"no valid '{key}'")
    if document["command"] != "rank" or document["permuted_modality"] not in ("a", "b"):
        raise ValueError("not a rank document")
    for name in ("feats_a", "feats_b", "labels"):
        info = document["inputs"].get(name)
        if not (isinstance(info, dict) and isinstance(info.get("path"), str)
                and isinstance(info.get("sha256"), str)
                and isinstance(info.get("shape"), list)):
            raise ValueError(f"no valid 'inputs.{name}'")
    for key in ("seed", "hidden"):
        if key not in document["options"]:
            raise ValueError(f"no 'options.{key}'")


def rank_document(result: RankResult, data: PairedData, run_id: str) -> dict[str, Any]:
    """The content of ``rank.json`` (the ``files`` checksums are added on writing)."""
    opts = result.options
    fit = result.fit
    return stamp("rank", {
        "command": "rank",
        "run_id": run_id,
        "created": distributed.from_main(now()),
        "inputs": {name: info.to_dict() for name, info in data.files.items()},
        "labels": {"task": "multi-label" if data.labels.multilabel else "single-label",
                   "n_classes": data.labels.n_classes, "classes": data.labels.classes},
        **result.checks(),  # options and every check's figures
        "environment": environment(result.device),
        "split": {"file": RunDir.RANK["split"], "n_train": len(result.split.train),
                  "n_test": len(result.split.test), "test_split": opts.test_split,
                  "from_file": opts.split,
                  "stratified": opts.split is None and not data.labels.multilabel},
        "aligned": {
            "epochs_max": fit.epochs_max,
            "epochs_run": fit.epochs_run,
            "best_epoch": fit.best_epoch[0],
            "train_loss": fit.train_loss[0],
            "val_loss": fit.val_loss[0],
            "metrics": result.metrics,
            "files": {"a": RunDir.RANK["net_a"], "b": RunDir.RANK["net_b"]},
        },
        "unpermuted_distance": result.unpermuted,
        # each restart's: its M columns of permuted_distances.npy increase over this
        "unpermuted_distance_per_restart": result.unpermuted_runs or [result.unpermuted],
        "standardization": result.standardization,
        "permuted_distance": {
            "file": RunDir.RANK["permuted_distances"],
            "mean": result.distances.mean(axis=1).tolist(),
            # the spread of the increases (each restart less its own baseline)
            "std": result.increase.std(axis=1).tolist(),
        },
        "salience_file": RunDir.RANK["salience"],
        "timings": result.timings,
        "warnings": rank_warnings(result.findings),
    })


@dataclass
class Run:
    """A ``rank`` run read back: its directory, document, salience, split and inputs.

    The teacher's modality is the one ``rank`` permuted (``a`` unless ``--permute b``);
    the student's is the other.
    """

    dir: RunDir
    document: dict[str, Any]
    salience: np.ndarray
    split: Split
    data: PairedData

    @property
    def path(self) -> Path:
        """The run directory (where a staged one will land)."""
        return self.dir.public(self.dir.path)

    @property
    def run_id(self) -> str:
        return self.document["run_id"]

    @property
    def teacher_side(self) -> str:
        return self.document["permuted_modality"]

    @property
    def student_side(self) -> str:
        return "b" if self.teacher_side == "a" else "a"

    @property
    def seed(self) -> int:
        return int(self.document["options"]["seed"])

    @property
    def constant(self) -> np.ndarray:
        """Channels of the teacher's modality constant on the fit rows."""
        return np.asarray(self.document.get("constant_channels", []), dtype=np.int64)

    @property
    def standardize(self) -> bool:
        return bool(self.document["options"].get("standardize", True))

    @property
    def ranking_reliability(self) -> dict[str, Any]:
        """Whether the ranking can be trusted, and why not (for the verdict), with the
        facts the verdict reads beside it: the gamma estimate, whether the rows are
        paired beyond their class, and which modalities predict the labels at chance."""
        return reliability(self.document)

    @property
    def groups(self) -> np.ndarray | None:
        """The group id of each channel of the teacher's modality when ``rank --groups``
        permuted groups, else ``None``."""
        found = self.document.get("groups")
        return None if not found else np.asarray(found["ids"], dtype=np.int64)

    @property
    def rank_options(self) -> dict[str, Any]:
        return self.document["options"]

    def features(self, side: str) -> np.ndarray:
        return self.data.xa if side == "a" else self.data.xb

    def rows(self, side: str, device: torch.device, chunk_rows: int | None = None) -> Rows:
        """One modality's rows for teachers and students: the run's split, with a
        seeded, stratified tenth of its training rows held back for early stopping."""
        labels = self.data.labels
        fit, val = fit_and_validation(self.split.train, labels.y, self.seed)
        return Rows(self.features(side), labels.y, fit, val, self.split.test,
                    labels.n_classes, labels.multilabel, device, chunk_rows,
                    standardize=self.standardize)

    def aligned_net(self, device: torch.device) -> Net:
        return self.dir.read_net(self.teacher_side, device)


def last_call(document: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``distill.json`` distilled with the options of its last call (the call
    whose verdict it keeps), and how many rows of other options it also holds. Rows of
    several calls with the same options (a sweep run one ratio at a time) belong
    together; rows of another ``--rho``, seed count or training are another experiment,
    never overlaid on this one."""
    rows = list(document["results"].values())
    key = document.get("last_options_key")
    if key is None and rows:  # written before the key was recorded: the newest rows'
        key = max(rows, key=lambda r: r["created"])["options_key"]
    kept = [r for r in rows if r["options_key"] == key]
    return kept, len(rows) - len(kept)


def load_run(path: str | Path) -> Run:
    """Read the run directory of ``rank``; see :meth:`RunDir.load`."""
    return RunDir(path).load()


def rank_files(
    feats_a: str | Path,
    feats_b: str | Path,
    labels: str | Path,
    out: str | Path = DEFAULT_RUN,
    options: RankOptions | None = None,
    progress: Progress = no_progress,
) -> tuple[RankResult, dict]:
    """Read the inputs, run Algorithm 1 and write the run directory ``out``.

    Everything is checked before anything is written: bad input leaves ``out`` as it was.
    Returns the result and the ``rank.json`` document.
    """
    options = (options or RankOptions()).checked()
    run_dir = RunDir(out).check_replaceable()
    data = load_paired(feats_a, feats_b, labels)
    result = rank(data, options, progress)
    return result, run_dir.write_rank(result, data)
