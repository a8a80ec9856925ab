"""AV-MNIST end to end with networks (paper Sec. 3 and App. B.1; masking as in App. B.4):
the user's workflow on raw inputs, run on the data ``examples make avmnist`` builds.

1. An image teacher (LeNet-5, App. B.1's image backbone) is trained on the raw 28 x 28
   images (75% of their PCA energy removed) and exported as a ``torch.export`` program,
   as a user would bring it; an audio network (the built-in 3-layer CNN) is trained
   alone on the raw log-mel spectrograms (32 mels x 16 frames).
2. ``extract`` takes the teacher's 120-unit layer (after its ReLU) and the audio
   network's last convolution (pooled per channel); ``rank`` ranks the teacher's units
   against the audio features (Algorithm 1), on the data's own split.
3. ``distill --student cnn3 --model teacher.pt2 --layer body.8``: audio CNN students
   learn from the whole teacher as given (Regular-KD) and masked after that layer
   (general, specific and random at r = 0.5), against No-KD, over shared seeds.
4. The feature-level ``diagnose`` on the same data (flat images and spectrograms, MLPs)
   is run beside it, and the two verdicts are compared: does KD help, does the MFH
   ordering hold, which row is best.

The paper's Table 5 (60,000 pairs, a 6-layer CNN audio teacher and an image + audio
teacher, no derived teachers) is printed beside it for scale, not as the same
experiment.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmkd_doctor.errors import InputError
from cmkd_doctor.examples.reproduce.avmnist import TABLE5, avmnist_folder
from cmkd_doctor.io.outputs import check_out_dir, write_npy
from cmkd_doctor.io.splits import fit_and_validation, read_split
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.schemas import stamp
from cmkd_doctor.seeds import derive_seed
from cmkd_doctor.training.engine import evaluate_rows
from cmkd_doctor.training.stacked import Member, Rows, TrainOptions, train_classifiers
from cmkd_doctor.training.student_networks import Architecture
from cmkd_doctor.validation import MAX_SEEDS, SEEDS_WHY, whole

DEFAULT_SEED = 42
DEFAULT_RUNS = 5
IMAGE_SHAPE, AUDIO_SHAPE = (1, 28, 28), (32, 16)  # as examples make avmnist writes them
TEACHER_LAYER = "body.8"  # LeNet-5's 120 units, after their ReLU
AUDIO_LAYER = "body.7"  # the 3-layer CNN's last convolution, after its ReLU
# one schedule for every network here: Adam at 3e-3 settles in about 10 epochs of
# batches of 128 on 8,100 rows (BENCHMARKS.md, "Network students")
SCHEDULE = TrainOptions(epochs=10, batch_size=128, lr=3e-3, patience=3)


def _verdict_summary(comparison: Any) -> dict[str, Any]:
    """What a verdict concludes, in the terms the two levels are compared by."""
    from cmkd_doctor.wording import kd_effect

    verdict = comparison.verdict
    return {"kd": kd_effect(verdict["kd"]),
            "kd_delta": verdict["kd_delta"],
            "ordering": verdict["mfh_ordering"].get("0.5"),
            "best": verdict["best"], "decision": verdict["decision"],
            "headline": verdict["headline"]}


def _rank_summary(document: dict[str, Any]) -> dict[str, Any]:
    """The trust signals of a ranking: alignment, pairing, gamma, stability."""
    return {"alignment": document["alignment"]["score"],
            "alignment_reliable": document["alignment"]["reliable"],
            "pairing_z": document["pairing"]["z"], "paired": document["pairing"]["paired"],
            "gamma": document["gamma_estimate"]["value"],
            "stable": document["stability"].get("stable")}


def _rows(comparison: Any) -> list[dict[str, Any]]:
    return [{"label": row.label, "teacher": row.teacher_metric,
             "mean": float(np.mean(row.student_runs)),
             "std": float(np.std(row.student_runs, ddof=1)),
             "runs": [round(v, 2) for v in row.student_runs]} for row in comparison.rows]


def _train_network(name: str, shape: tuple[int, ...], rows: Rows, seed: int,
                   progress: Progress, task: str) -> Any:
    arch = Architecture(name, shape, rows.n_classes).checked()
    net = train_classifiers(rows, [Member(seed)], SCHEDULE, architecture=arch,
                            progress=progress, task=task)[0]
    accuracy = evaluate_rows(net, [rows.part(rows.test)], 0, 1, False)[0]["accuracy"]
    return net, 100 * accuracy


def _export(net: torch.nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """The network as the ``torch.export`` program a user would bring (.pt2)."""
    program = torch.export.export(net.eval(), (torch.zeros(2, *shape),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path


def _read(folder: Path) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """The folder's labels, split, images and spectrograms, checked for the shapes
    ``examples make avmnist`` writes by default."""
    y = np.load(folder / "labels.npy", allow_pickle=False)
    split = read_split(folder / "split.npz", len(y))
    image = np.load(folder / "image.npy", mmap_mode="r", allow_pickle=False)
    audio = np.load(folder / "audio.npy", mmap_mode="r", allow_pickle=False)
    if image.shape[1:] != (784,) or audio.shape[1:] != (512,):
        raise InputError(f"--data {folder}: expected 28 x 28 images (784 values) and 32 "
                         f"x 16 spectrograms (512) per row, as 'examples make avmnist' "
                         f"writes them by default; got {image.shape[1:]} and "
                         f"{audio.shape[1:]}")
    return y, split, image, audio


def _networks(rows: Rows, audio: np.ndarray, seed: int, work: Path, progress: Progress
              ) -> tuple[Path, Path, float, float]:
    """Step 1, the networks a user brings: an image teacher and an audio network,
    trained and exported as programs; their paths and test accuracies."""
    teacher, teacher_acc = _train_network("lenet5", IMAGE_SHAPE, rows,
                                          derive_seed(seed, "avmnist_networks_teacher"),
                                          progress, "image teacher")
    listener, audio_acc = _train_network("cnn3", AUDIO_SHAPE,
                                         rows.with_x(np.asarray(audio, np.float32)),
                                         derive_seed(seed, "avmnist_networks_audio"),
                                         progress, "audio network")
    return (_export(teacher, IMAGE_SHAPE, work / "image_teacher.pt2"),
            _export(listener, AUDIO_SHAPE, work / "audio_network.pt2"), teacher_acc,
            audio_acc)


def _extract_and_rank(programs: dict[str, tuple[Path, str, Path]], folder: Path, seed: int,
                      device: torch.device, work: Path, progress: Progress
                      ) -> dict[str, Any]:
    """Step 2: extract both layers (``programs``: side -> program, layer, raw rows) and
    rank the teacher's units against the audio features; the ``rank.json`` document."""
    from cmkd_doctor.io.rundir import rank_files
    from cmkd_doctor.ranking.options import RankOptions
    from cmkd_doctor.teachers.extraction import ExtractOptions, extract, write_features

    features = {}
    for side, (path, layer, raw) in programs.items():
        options = ExtractOptions(layer=layer, program=str(path), batch_size=512,
                                 device=str(device))
        found, names = extract(options, array=raw)
        features[side] = write_features(found, names, work / f"features_{side}.npy", options)
    rank_options = RankOptions(split=str(folder / "split.npz"), seed=seed, device=str(device))
    _, document = rank_files(features["a"], features["b"], folder / "labels.npy",
                             work / "run", rank_options, progress)
    return document


def _feature_level(folder: Path, runs: int, seed: int, device: torch.device, work: Path,
                   progress: Progress) -> dict[str, Any]:
    """Step 4: the feature-level ``diagnose`` on the same data, summarised."""
    from cmkd_doctor.diagnosis.diagnose import DiagnoseConfig, diagnose

    config = DiagnoseConfig()
    config = replace(config, rank=replace(config.rank, split=str(folder / "split.npz"),
                                          seed=seed, device=str(device)),
                     distill=replace(config.distill, seeds=runs, seed=seed,
                                     device=str(device)))
    found = diagnose([folder / "image.npy", folder / "audio.npy", folder / "labels.npy"],
                     out=work / "features_run", config=config, progress=progress)
    return {"rows": _rows(found.report), "verdict": _verdict_summary(found.report),
            "rank": _rank_summary(found.rank_document)}


def reproduce_avmnist_networks(data_dir: str | Path | None, runs: int = DEFAULT_RUNS,
                               seed: int = DEFAULT_SEED, device: str | torch.device = "cpu",
                               out: str | Path | None = None,
                               progress: Progress = no_progress,
                               feature_level: bool = True) -> dict[str, Any]:
    """The network-level AV-MNIST case study (see the module docstring); the files it
    makes (raw arrays, teacher program, features, the rank and diagnose runs) stay in
    ``out`` (a temporary folder when ``None``). Returns the ``reproduction`` document."""
    from cmkd_doctor.diagnosis.distill import DistillOptions, distill
    from cmkd_doctor.teachers.whole_networks import NetworkOptions

    whole("runs", runs, 2, maximum=MAX_SEEDS, why=SEEDS_WHY)
    folder = avmnist_folder(data_dir, "avmnist-networks")
    start = time.perf_counter()
    device = torch.device(device)
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - since, 1)
        return now

    with ExitStack() as stack:
        if out is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="cmkd-avmnist-networks-")))
        else:
            work = check_out_dir(out)
            work.mkdir(parents=True, exist_ok=True)
        y, split, image, audio = _read(folder)
        raw_a = write_npy(work / "image_raw.npy",
                          np.asarray(image, np.float32).reshape(-1, *IMAGE_SHAPE))
        raw_b = write_npy(work / "audio_raw.npy",
                          np.asarray(audio, np.float32).reshape(-1, *AUDIO_SHAPE))
        fit, val = fit_and_validation(split.train, y, seed)
        rows = Rows(np.asarray(image, np.float32), y, fit, val, split.test,
                    int(y.max()) + 1, False, device)
        mark = time.perf_counter()
        program, audio_program, teacher_acc, audio_acc = _networks(rows, audio, seed, work,
                                                                   progress)
        mark = lap("networks", mark)
        document = _extract_and_rank({"a": (program, TEACHER_LAYER, raw_a),
                                      "b": (audio_program, AUDIO_LAYER, raw_b)},
                                     folder, seed, device, work, progress)
        mark = lap("extract_and_rank", mark)
        # 3. network students from the whole teacher, as given and masked
        networks = NetworkOptions(student="cnn3", student_inputs=str(raw_b),
                                  model=str(program), teacher_inputs=str(raw_a),
                                  layer=TEACHER_LAYER)
        comparison = distill(work / "run", DistillOptions(
            teachers=("all",), ratios=(0.5,), seeds=runs, train=SCHEDULE,
            device=str(device), seed=seed, networks=networks), progress)
        mark = lap("network_students", mark)
        level = None
        if feature_level:
            level = _feature_level(folder, runs, seed, device, work, progress)
            lap("feature_level_diagnose", mark)

    return _document(runs, seed, round(time.perf_counter() - start, 1), seconds,
                     (teacher_acc, audio_acc), document, comparison, level)


def _document(runs: int, seed: int, total: float, phases: dict[str, float],
              accuracies: tuple[float, float], document: dict[str, Any], comparison: Any,
              level: dict[str, Any] | None) -> dict[str, Any]:
    """The ``reproduction`` document: the networks, the network-level rows and verdict,
    the feature level's (``level``) and where the two agree, beside the paper's Table 5."""
    networks_verdict = _verdict_summary(comparison)
    agreement = None if level is None else {
        key: networks_verdict[key] == level["verdict"][key]
        for key in ("kd", "ordering", "best")}
    return stamp("reproduction", {
        "experiment": "avmnist-networks", "runs": runs, "seed": seed,
        "seconds": total, "phases": phases,
        "networks": {"image_teacher": {"architecture": "lenet5", "accuracy": accuracies[0],
                                       "layer": TEACHER_LAYER},
                     "audio_network": {"architecture": "cnn3", "accuracy": accuracies[1],
                                       "layer": AUDIO_LAYER},
                     "student": "cnn3", "schedule": SCHEDULE.to_dict()},
        "rank": _rank_summary(document),
        "rows": _rows(comparison), "verdict": networks_verdict,
        "feature_level": level, "agreement": agreement,
        "paper": {"table5_rho_0.5": {k: v["rho_0.5"] for k, v in TABLE5.items()},
                  "teachers": {k: v["teacher"] for k, v in TABLE5.items()},
                  "note": "the paper's Table 5 has 60,000 pairs (ours: the 10,000 of "
                          "MNIST's test set), an audio (UM-KD) or image + audio (CM-KD) "
                          "teacher and no derived teachers"},
        "claim": "crossmodal KD helps only through modality-general decisive information; "
                 "AV-MNIST pairs each image with a random recording of its digit, so "
                 "little is shared beyond the class (App. B.1)",
        "source": "Xue et al., ICLR 2023, Sec. 3, Table 5 (App. B.1), App. B.4"})
