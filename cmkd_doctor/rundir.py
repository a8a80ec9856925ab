"""The run directory (``cmkd-out`` by default) that every command reads and writes.

``rank`` writes ``salience.npy``, ``permuted_distances.npy``, ``split.npz``, the two
aligned networks as ``.safetensors`` (config in metadata) and, last, ``rank.json``,
which describes all of them: inputs with checksums, options, versions, timings and
metrics. Each file is written atomically, and only after all work is done.
"""

from __future__ import annotations

import io
import json
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmkd_doctor import __version__
from cmkd_doctor.errors import InputError
from cmkd_doctor.inputs import PairedData, load_paired
from cmkd_doctor.models import Net, load_net, save_net
from cmkd_doctor.outputs import check_out_dir, write_bytes, write_json, write_npy
from cmkd_doctor.ranking import RankOptions, RankResult, rank
from cmkd_doctor.runtime import Progress, no_progress
from cmkd_doctor.splits import Split

DEFAULT_RUN = Path("cmkd-out")
RANK_FILES = {
    "salience": "salience.npy",
    "permuted_distances": "permuted_distances.npy",
    "split": "split.npz",
    "net_a": "net_a.safetensors",
    "net_b": "net_b.safetensors",
    "rank": "rank.json",
}


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware a result was obtained with."""
    env = {"cmkd_doctor": __version__, "python": sys.version.split()[0],
           "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform(), "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def rank_document(result: RankResult, data: PairedData) -> dict[str, Any]:
    """The content of ``rank.json``."""
    opts = result.options
    fit = result.fit
    return {
        "command": "rank",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {name: info.to_dict() for name, info in data.files.items()},
        "labels": {"task": "multi-label" if data.labels.multilabel else "single-label",
                   "n_classes": data.labels.n_classes, "classes": data.labels.classes},
        "options": opts.to_dict(),
        "environment": environment(result.device),
        "split": {"file": RANK_FILES["split"], "n_train": len(result.split.train),
                  "n_test": len(result.split.test), "test_split": opts.test_split,
                  "from_file": opts.split,
                  "stratified": opts.split is None and not data.labels.multilabel},
        "aligned": {
            "epochs_max": fit.epochs_max,
            "epochs_run": fit.epochs_run,
            "best_epoch": fit.best_epoch,
            "train_loss": fit.train_loss,
            "val_loss": fit.val_loss,
            "metrics": result.metrics,
            "files": {"a": RANK_FILES["net_a"], "b": RANK_FILES["net_b"]},
        },
        "permuted_modality": opts.permute,
        "permuted_rows": result.permuted_rows,
        "unpermuted_distance": result.unpermuted,
        "permuted_distance": {
            "file": RANK_FILES["permuted_distances"],
            "mean": result.distances.mean(axis=1).tolist(),
            "std": result.distances.std(axis=1).tolist(),
        },
        "salience_file": RANK_FILES["salience"],
        "timings": result.timings,
        "warnings": result.warnings,
    }


def write_rank(out: str | Path, result: RankResult, data: PairedData) -> dict[str, Any]:
    """Write a ``rank`` run into ``out``; returns the ``rank.json`` document."""
    out = Path(out)
    document = rank_document(result, data)
    meta = {"role": "aligned", "options": json.dumps(document["options"]),
            "inputs": json.dumps(document["inputs"]), "cmkd_doctor": __version__}
    write_npy(out / RANK_FILES["salience"], result.salience.astype(np.float32))
    write_npy(out / RANK_FILES["permuted_distances"], result.distances)
    buffer = io.BytesIO()
    np.savez(buffer, train=result.split.train, test=result.split.test)
    write_bytes(out / RANK_FILES["split"], buffer.getvalue())
    save_net(result.net_a, out / RANK_FILES["net_a"], {**meta, "modality": "a"})
    save_net(result.net_b, out / RANK_FILES["net_b"], {**meta, "modality": "b"})
    write_json(out / RANK_FILES["rank"], document)  # last: it vouches for the rest
    return document


def rank_files(
    feats_a: str | Path,
    feats_b: str | Path,
    labels: str | Path,
    out: str | Path = DEFAULT_RUN,
    options: RankOptions | None = None,
    progress: Progress = no_progress,
) -> tuple[RankResult, dict[str, Any]]:
    """Read the inputs, run Algorithm 1 and write the run directory ``out``.

    Everything is checked before anything is written: bad input leaves ``out`` as it was.
    """
    options = (options or RankOptions()).checked()
    check_out_dir(out)
    data = load_paired(feats_a, feats_b, labels)
    result = rank(data, options, progress)
    return result, write_rank(out, result, data)


@dataclass
class Run:
    """A ``rank`` run read back: its document, salience, split and re-checked inputs.

    The teacher's modality is the one ``rank`` permuted (``a`` unless ``--permute b``);
    the student's is the other.
    """

    path: Path
    document: dict[str, Any]
    salience: np.ndarray
    split: Split
    data: PairedData

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
    def rank_options(self) -> dict[str, Any]:
        return self.document["options"]

    def features(self, side: str) -> np.ndarray:
        return self.data.xa if side == "a" else self.data.xb

    def aligned_net(self, device: torch.device) -> Net:
        net, _ = load_net(self.path / RANK_FILES[f"net_{self.teacher_side}"], device)
        return net


def load_run(path: str | Path) -> Run:
    """Read the run directory of ``rank``; its inputs must not have changed since."""
    path = Path(path)
    doc_path = path / RANK_FILES["rank"]
    if not doc_path.is_file():
        raise InputError(f"--run {path}: no rank run there ({RANK_FILES['rank']} is missing); "
                         "run 'cmkd-doctor rank' first or pass --run DIR")
    try:
        document = json.loads(doc_path.read_text())
        salience = np.load(path / RANK_FILES["salience"], allow_pickle=False)
        with np.load(path / RANK_FILES["split"], allow_pickle=False) as split:
            split = Split(split["train"], split["test"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--run {path}: the rank run is incomplete or damaged ({exc}); "
                         "rerun 'cmkd-doctor rank'") from exc
    inputs = document["inputs"]
    specs = {}
    for name, info in inputs.items():
        spec = info["path"] + (f":{info['key']}" if info.get("key") else "")
        if not Path(info["path"]).is_file():
            raise InputError(f"{info['path']}: the {name} file ranked in {path} is gone")
        specs[name] = spec
    data = load_paired(specs["feats_a"], specs["feats_b"], specs["labels"])
    for name, info in data.files.items():
        if info.sha256 != inputs[name]["sha256"]:
            raise InputError(f"{info.source}: changed since 'cmkd-doctor rank' wrote {path} "
                             "(sha256 differs); rerun rank")
    return Run(path, document, salience, split, data)
