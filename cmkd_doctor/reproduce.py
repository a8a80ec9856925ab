"""The paper's synthetic Gaussian experiments (Sec. 5.2, Appendix B.2): Table 2, Fig. 2
and Fig. 3, with our figures beside the paper's.

Protocol (Appendix B.2 and the official code): logistic-regression teachers and
students, 200 training and 1000 test rows per run, full-batch SGD (lr 0.1, 1000
epochs), rho = 0.5 and T = 1 in Eq. 1, 10 runs. Every run draws its own data; all runs
of a setting train at once as one batched model, each from its own child seed.

- Table 2: d1 = d2 = 50, 20 decisive coordinates weighed equally (delta = ones, as the
  official Table 2 script), of which s = 5, 10, 15 are shared (gamma = 0.25, 0.5, 0.75)
  and the rest a-specific; b holds only the shared ones. Teachers train on one draw and
  students distil on a fresh draw of the same size, as the official code does. The
  modality-general teacher sees only the shared channels (the truth), the random-channel
  teacher as many channels chosen at random.
- Fig. 2: d1 = 25, d2 = 50, |J1| = |J2| = 10 of d = 20, overlap 0..10 (gamma 0..1).
- Fig. 3: d1 = d2 = 50, x* of 50 coordinates, 10 shared, 0..40 a-specific (alpha 0..0.8;
  the paper's list ends with 0.83, which needs more channels than d1 = 50 holds).

One deliberate difference: the official Table 2 script trains its Regular-KD student
with the modalities swapped (its teacher is fed x^b and its student trained on x^a, then
tested on x^b); here every student learns from x^b and every teacher sees x^a.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cmkd_doctor.classifiers import Member, Rows, SoftLabels, TrainOptions, train_classifiers
from cmkd_doctor.engine import Schedule, evaluate_rows, fit
from cmkd_doctor.errors import InputError
from cmkd_doctor.gaussian import GaussianData, GaussianSpec, make_gaussian
from cmkd_doctor.losses import kd_loss_rows, task_loss_rows
from cmkd_doctor.models import NetConfig, Stacked, new_net
from cmkd_doctor.options import whole
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.registry import Registry
from cmkd_doctor.seeds import derive_seed, generator
from cmkd_doctor.splits import fit_and_validation, read_split
from cmkd_doctor.streaming import RowSet

EPOCHS, LR, RHO, N_TRAIN, N_TEST = 1000, 0.1, 0.5, 200, 1000
PAPER_SOURCE = ("Xue et al., The Modality Focusing Hypothesis, ICLR 2023: Table 2 and "
                "Sec. 4.2 (Fig. 2: +2.1 points at gamma = 1)")


@dataclass(frozen=True)
class Setting:
    """One row of an experiment: the generator's sizes and the paper's figures."""

    label: str
    spec: GaussianSpec
    paper: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    settings: tuple[Setting, ...]
    fresh: bool  # students distil on a fresh draw (the official Table 2 script)
    teachers: tuple[str, ...]  # which teachers besides the regular one
    claim: str


def _table2() -> tuple[Setting, ...]:
    paper = {  # Table 2 of the paper
        0.25: (89.70, 64.84, 59.29, 59.46, 61.01),
        0.50: (89.62, 73.41, 67.64, 67.86, 70.25),
        0.75: (89.70, 79.41, 76.46, 76.53, 77.70),
    }
    keys = ("regular_teacher", "general_teacher", "no_kd", "regular_kd", "general_kd")
    return tuple(
        Setting(f"{gamma:.2f}",
                GaussianSpec(d1=50, d2=50, d=20, j1=20, j2=shared, shared=shared,
                             n_train=N_TRAIN, n_test=N_TEST, delta="ones"),
                dict(zip(keys, paper[gamma], strict=True)))
        for gamma, shared in ((0.25, 5), (0.50, 10), (0.75, 15)))


EXPERIMENTS: Registry[Experiment] = Registry("examples reproduce EXPERIMENT")
for _experiment in (
    Experiment(
        "table2", "Table 2: regular vs modality-general teacher", _table2(), fresh=True,
        teachers=("general", "random"),
        claim="the modality-general teacher is 10 or more points less accurate than the "
              "regular one, yet its student beats the Regular-KD student"),
    Experiment(
        "fig2", "Fig. 2: crossmodal KD as gamma grows",
        tuple(Setting(f"{s / (20 - s):.2f}",
                      GaussianSpec(d1=25, d2=50, d=20, j1=10, j2=10, shared=s,
                                   n_train=N_TRAIN, n_test=N_TEST),
                      {"kd_minus_no_kd": 2.1} if s == 10 else {})
              for s in range(0, 11, 2)),
        fresh=False, teachers=(),
        claim="KD helps more as gamma grows: +2.1 points over No-KD at gamma = 1"),
    Experiment(
        "fig3", "Fig. 3: crossmodal KD as alpha grows (beta = 0)",
        tuple(Setting(f"{a / (a + 10):.2f}",
                      GaussianSpec(d1=50, d2=50, d=50, j1=a + 10, j2=10, shared=10,
                                   n_train=N_TRAIN, n_test=N_TEST))
              for a in range(0, 41, 10)),
        fresh=False, teachers=(),
        claim="the teacher improves as alpha grows, the student does not follow"),
):
    EXPERIMENTS.add(_experiment.name, _experiment, _experiment.title)


def _stack(arrays: list[np.ndarray], dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.stack(arrays)).to(dtype)


def _linear_models(d_in: int, seeds: list[int], device: torch.device) -> Stacked:
    # no standardisation: the data are N(0, 1) already
    return Stacked([new_net(NetConfig(d_in, (), 2), seed) for seed in seeds]).to(device)


def fit_batched(x: torch.Tensor, y: torch.Tensor, seeds: list[int],
                soft: torch.Tensor | None = None, kd: torch.Tensor | None = None,
                epochs: int = EPOCHS) -> Stacked:
    """Logistic regression per model, ``x (S, n, d)``, full-batch SGD as the official code.

    Models with ``kd[s]`` true learn with Eq. 1 (rho = 0.5, T = 1) from the teacher logits
    ``soft (S, n, 2)``; the others with cross-entropy alone. Each model has its own rows
    (a grouped array, one group per model) and its own mean loss, so batching changes
    nothing in any model's updates.
    """
    model = _linear_models(x.shape[-1], seeds, x.device)
    arrays = [x, y] if soft is None else [x, y, soft]
    rows = RowSet.of_tensors([a.transpose(0, 1) for a in arrays],  # (n, S, ...)
                             grouped=range(len(arrays)))
    rho = None if soft is None else torch.where(kd, RHO, 1.0)[:, None].to(x.device)  # (S, 1)

    def loss_rows(module: torch.nn.Module, batch: list[torch.Tensor],
                  members: torch.Tensor) -> torch.Tensor:
        logits = module(batch[0])  # (S, n, 2)
        loss = task_loss_rows(logits, batch[1], False)  # (S, n)
        if rho is None:
            return loss
        r = rho[members]
        return r * loss + (1 - r) * kd_loss_rows(logits, batch[2], 1.0, False)

    fit(model, loss_rows, rows, Schedule(epochs, LR, batch_size=None, optimizer="sgd"),
        shuffle_seeds=seeds, groups=torch.arange(len(seeds)))
    return model


@torch.no_grad()
def _accuracy(model: Stacked, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return 100 * (model(x).argmax(-1) == y).float().mean(-1).cpu().numpy()  # (S,)


def run_experiment(experiment: Experiment, runs: int, seed: int, device: torch.device
                   ) -> list[dict[str, np.ndarray]]:
    """Every setting and run of an experiment; accuracy (%) per run for every model.

    All teachers of all settings and runs train as one batched model, then all students
    as another: two batched fits instead of one per model and run.
    """
    settings = experiment.settings
    run_seeds = [derive_seed(seed, "repro_run", r) for r in range(runs)]
    cells = [(i, r) for i in range(len(settings)) for r in range(runs)]
    data: list[GaussianData] = [
        make_gaussian(replace(settings[i].spec, seed=run_seeds[r])) for i, r in cells]
    init = [derive_seed(run_seeds[r], "repro_init") for _, r in cells]

    def part(name: str, dtype=torch.float32) -> torch.Tensor:
        return _stack([getattr(g, name) for g in data], dtype).to(device)

    xa, xb, y = part("xa"), part("xb"), part("y", torch.long)
    xa_t, xb_t, y_t = part("xa_test"), part("xb_test"), part("y_test", torch.long)
    if experiment.fresh:
        sa, sb, sy = part("xa_fresh"), part("xb_fresh"), part("y_fresh", torch.long)
    else:
        sa, sb, sy = xa, xb, y

    # The channels each teacher keeps: all (regular), the truth's shared ones (general),
    # as many at random (random). Removing a channel == zeroing it for a linear model.
    d1 = xa.shape[-1]
    keeps = {"regular": [np.arange(d1)] * len(cells)}
    if "general" in experiment.teachers:
        keeps["general"] = [np.array(g.truth["channels_a"]["general"]) for g in data]
    if "random" in experiment.teachers:
        keeps["random"] = [
            torch.randperm(d1, generator=generator(run_seeds[r], "repro_random_channels"))[
                : settings[i].spec.shared].numpy() for i, r in cells]
    kinds = list(keeps)
    mask = _stack([np.isin(np.arange(d1), k) for kind in kinds for k in keeps[kind]]
                  ).to(device)[:, None, :]  # (kinds * cells, 1, d1)

    def tile(x: torch.Tensor, times: int) -> torch.Tensor:
        return x.repeat(times, *([1] * (x.dim() - 1)))

    teachers = fit_batched(tile(xa, len(kinds)) * mask, tile(y, len(kinds)),
                           init * len(kinds))
    teacher_acc = _accuracy(teachers, tile(xa_t, len(kinds)) * mask, tile(y_t, len(kinds)))
    with torch.no_grad():
        soft = teachers(tile(sa, len(kinds)) * mask)  # (kinds * cells, n, 2)
    # students: No-KD first, then one per teacher kind, all on x^b
    n_models = 1 + len(kinds)
    student_init = [derive_seed(s, "repro_student_init") for s in init] * n_models
    soft_all = torch.cat([torch.zeros_like(soft[: len(cells)]), soft])
    kd = torch.tensor([False] * len(cells) + [True] * len(cells) * len(kinds), device=device)
    students = fit_batched(tile(sb, n_models), tile(sy, n_models), student_init,
                           soft=soft_all, kd=kd)
    student_acc = _accuracy(students, tile(xb_t, n_models), tile(y_t, n_models))

    results = []
    for i in range(len(settings)):
        cols = [c for c, (j, _) in enumerate(cells) if j == i]  # this setting's runs
        row = {"no_kd": student_acc[cols]}
        for k, kind in enumerate(kinds):
            row[f"{kind}_teacher"] = teacher_acc[[k * len(cells) + c for c in cols]]
            row[f"{kind}_kd"] = student_acc[[(k + 1) * len(cells) + c for c in cols]]
        results.append(row)
    return results


@dataclass
class Reproduction:
    """An experiment's rows (mean, std and runs per model, the paper's figures beside)."""

    experiment: Experiment
    runs: int
    rows: list[dict]
    seconds: float

    def claim_check(self) -> list[str]:
        """What we measure of the paper's claim, with the run-to-run spread."""
        rows, name = self.rows, self.experiment.name
        lines = []
        if name == "table2":
            for row in rows:
                gap = row["regular_teacher"]["mean"] - row["general_teacher"]["mean"]
                gain = row["general_kd_minus_regular_kd"]
                beyond = gain["mean"] > 2 * gain["std"] / self.runs**0.5
                lines.append(
                    f"gamma {row['gamma']:.2f}: general teacher {gap:.1f} points below the "
                    f"regular one; general-KD - regular-KD {gain['mean']:+.2f} ± "
                    f"{gain['std']:.2f} per run ({'beyond' if beyond else 'within'} "
                    "run-to-run noise)")
        else:
            first, last = rows[0], rows[-1]
            lines.append(f"KD - No-KD: {first['kd_minus_no_kd']['mean']:+.2f} ± "
                         f"{first['kd_minus_no_kd']['std']:.2f} at the first setting, "
                         f"{last['kd_minus_no_kd']['mean']:+.2f} ± "
                         f"{last['kd_minus_no_kd']['std']:.2f} at the last; teacher "
                         f"{first['regular_teacher']['mean']:.1f} -> "
                         f"{last['regular_teacher']['mean']:.1f}")
        return lines

    def to_dict(self, seed: int) -> dict:
        return {"experiment": self.experiment.name, "title": self.experiment.title,
                "runs": self.runs, "seed": seed, "seconds": round(self.seconds, 3),
                "claim": self.experiment.claim, "rows": self.rows, "source": PAPER_SOURCE}


def reproduce(name: str, runs: int = 10, seed: int = 42, device: str | torch.device = "cpu",
              progress: Progress = no_progress,
              clock: Callable[[], float] | None = None) -> Reproduction:
    """Run one experiment; each row holds per-model mean, std and runs, and the paper's."""
    import time

    experiment = EXPERIMENTS[name]
    whole("runs", runs, 2)
    clock = clock or time.perf_counter
    device = torch.device(device)
    start = clock()
    rows = []
    for setting, results in zip(experiment.settings, run_experiment(experiment, runs, seed,
                                                                     device), strict=True):
        row = {"setting": setting.label,
               "gamma": _gamma(setting.spec), "alpha": _alpha(setting.spec)}
        for key, values in results.items():
            row[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                        "runs": values.round(2).tolist()}
        delta = results["regular_kd"] - results["no_kd"]
        row["kd_minus_no_kd"] = {"mean": float(delta.mean()), "std": float(delta.std(ddof=1))}
        if "general_kd" in results:
            delta = results["general_kd"] - results["regular_kd"]
            row["general_kd_minus_regular_kd"] = {"mean": float(delta.mean()),
                                                  "std": float(delta.std(ddof=1))}
        row["paper"] = setting.paper
        rows.append(row)
    progress(f"reproduce {name}", 1, 1)
    return Reproduction(experiment, runs, rows, clock() - start)


def save_plot(result: Reproduction, path: str | Path) -> Path:
    """Our series beside the paper's figures, as a PNG file (needs matplotlib)."""
    from cmkd_doctor.outputs import write_bytes
    from cmkd_doctor.report import plot_reproduction

    return write_bytes(path, plot_reproduction(result.rows, result.experiment.name,
                                               result.experiment.title, PAPER_SOURCE))


def _gamma(spec: GaussianSpec) -> float:
    return spec.shared / (spec.j1 + spec.j2 - spec.shared)


def _alpha(spec: GaussianSpec) -> float:
    return 1 - spec.j2 / (spec.j1 + spec.j2 - spec.shared)


# Table 5 of the paper (Appendix B.1): AV-MNIST, audio student.
TABLE5 = {
    "no_kd": {"teacher": None, "rho_0": (68.36, 0.79), "rho_0.5": (68.36, 0.79)},
    "um_kd": {"teacher": 84.57, "rho_0": (69.86, 0.70), "rho_0.5": (70.10, 0.50)},
    "cm_kd": {"teacher": 91.61, "rho_0": (69.46, 1.12), "rho_0.5": (69.73, 0.73)},
}
TEACHER_HIDDEN, STUDENT_HIDDEN = (512, 256), (128,)


def reproduce_avmnist(data_dir: str | Path | None, runs: int = 10, seed: int = 0,
                      device: str | torch.device = "cpu",
                      progress: Progress = no_progress) -> dict:
    """The Sec. 3 case study (Table 1 / Table 5) at the feature level.

    An audio student learns with no KD, from a unimodal audio teacher (UM-KD), or from an
    image + audio teacher (CM-KD), with rho = 0 and 0.5. The teachers are MLPs
    (512, 256) and the student an MLP (128), standing in for the paper's CNNs on
    AV-MNIST as ``examples make avmnist`` builds it. Teachers train once; students
    train ``runs`` seeds each, batched.
    """
    import time

    whole("runs", runs, 2)
    if data_dir is None:
        raise InputError("examples reproduce table1-avmnist needs --data DIR (from "
                         "'cmkd-doctor examples make avmnist')")
    folder = Path(data_dir)
    names = ("image.npy", "audio.npy", "labels.npy", "split.npz")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise InputError(f"--data {folder}: expected an AV-MNIST folder from 'cmkd-doctor "
                         f"examples make avmnist' ({', '.join(names)}); missing "
                         f"{', '.join(missing)}")
    start = time.perf_counter()
    device = torch.device(device)
    y_all = np.load(folder / "labels.npy", allow_pickle=False)
    split = read_split(folder / "split.npz", len(y_all))
    fit_rows, val_rows = fit_and_validation(split.train, y_all, seed)
    audio = np.load(folder / "audio.npy", mmap_mode="r", allow_pickle=False)
    image = np.load(folder / "image.npy", mmap_mode="r", allow_pickle=False)
    n_classes = int(y_all.max()) + 1
    aud = Rows(audio, y_all, fit_rows, val_rows, split.test, n_classes, False, device)
    both = aud.with_x(np.concatenate([image, audio], axis=1))
    sources = {"um_kd": aud, "cm_kd": both}

    def accuracy(model: torch.nn.Module, rows: Rows) -> list[float]:
        return [100 * m["accuracy"] for m in evaluate_rows(model, [rows.part(rows.test)],
                                                           0, 1, False)]

    teachers = {name: train_classifiers(rows, [Member(derive_seed(seed, "avmnist_teacher"))],
                                        TrainOptions(hidden=TEACHER_HIDDEN),
                                        progress=progress, task=f"teacher {name}")[0]
                for name, rows in sources.items()}
    # every student (No-KD, and both teachers at both rho) as one stacked fit
    soft = SoftLabels(len(y_all), len(teachers), n_classes, streamed=False)
    for column, name in enumerate(teachers):
        soft.fill(column, teachers[name], sources[name], [fit_rows, val_rows])
    seeds = [derive_seed(seed, "avmnist_student", r) for r in range(runs)]
    cells = [("no_kd", 1.0, 0)] + [(name, rho, column)
                                   for column, name in enumerate(teachers)
                                   for rho in (0.0, 0.5)]
    members = [Member(s, rho=rho, teacher=column) for _, rho, column in cells for s in seeds]
    nets = train_classifiers(aud, members, TrainOptions(hidden=STUDENT_HIDDEN),
                             soft=soft.array, progress=progress, task="students")
    student_runs = accuracy(Stacked(nets), aud)
    results: dict[str, dict] = {"no_kd": {"teacher": None}}
    for i, (name, rho, _) in enumerate(cells):
        per_seed = student_runs[i * runs:(i + 1) * runs]
        if name == "no_kd":
            results[name].update({"rho_0": per_seed, "rho_0.5": per_seed})
            continue
        results.setdefault(name, {"teacher": accuracy(teachers[name], sources[name])[0]})
        results[name][f"rho_{rho:g}"] = per_seed
    rows_out = []
    for name in ("no_kd", "um_kd", "cm_kd"):
        row = {"row": name, "teacher": results[name]["teacher"],
               "paper": {"teacher": TABLE5[name]["teacher"]}}
        for rho in ("rho_0", "rho_0.5"):
            values = np.asarray(results[name][rho])
            row[rho] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                        "runs": values.round(2).tolist()}
            row["paper"][rho] = dict(zip(("mean", "std"), TABLE5[name][rho], strict=True))
        rows_out.append(row)
    return {"experiment": "table1-avmnist", "runs": runs, "seed": seed,
            "seconds": round(time.perf_counter() - start, 3), "rows": rows_out,
            "claim": "the multimodal (image + audio) teacher is far more accurate than the "
                     "audio teacher, yet its student is no better than the UM-KD student",
            "source": "Xue et al., ICLR 2023, Table 1 and Table 5 (Appendix B.1)"}
