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

from cmkd_doctor.classifiers import Stacked
from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.gaussian import GaussianData, GaussianSpec, make_gaussian
from cmkd_doctor.losses import kd_loss_rows, task_loss_rows
from cmkd_doctor.models import Net, NetConfig
from cmkd_doctor.runtime import Progress, derive_seed, generator, no_progress, rows_to

EPOCHS, LR, RHO, N_TRAIN, N_TEST = 1000, 0.1, 0.5, 200, 1000
_SEED_INIT, _SEED_RANDOM_CHANNELS = 41, 42


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


EXPERIMENTS = {
    "table2": Experiment(
        "table2", "Table 2: regular vs modality-general teacher", _table2(), fresh=True,
        teachers=("general", "random"),
        claim="the modality-general teacher is 10 or more points less accurate than the "
              "regular one, yet its student beats the Regular-KD student"),
    "fig2": Experiment(
        "fig2", "Fig. 2: crossmodal KD as gamma grows",
        tuple(Setting(f"{s / (20 - s):.2f}",
                      GaussianSpec(d1=25, d2=50, d=20, j1=10, j2=10, shared=s,
                                   n_train=N_TRAIN, n_test=N_TEST),
                      {"kd_minus_no_kd": 2.1} if s == 10 else {})
              for s in range(0, 11, 2)),
        fresh=False, teachers=(),
        claim="KD helps more as gamma grows: +2.1 points over No-KD at gamma = 1"),
    "fig3": Experiment(
        "fig3", "Fig. 3: crossmodal KD as alpha grows (beta = 0)",
        tuple(Setting(f"{a / (a + 10):.2f}",
                      GaussianSpec(d1=50, d2=50, d=50, j1=a + 10, j2=10, shared=10,
                                   n_train=N_TRAIN, n_test=N_TEST))
              for a in range(0, 41, 10)),
        fresh=False, teachers=(),
        claim="the teacher improves as alpha grows, the student does not follow"),
}


def get_experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise InputError(f"examples reproduce: no experiment {name!r}; choose one of "
                         f"{', '.join(EXPERIMENTS)}") from None


def _stack(arrays: list[np.ndarray], dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.stack(arrays)).to(dtype)


def _linear_models(d_in: int, seeds: list[int], device: torch.device) -> Stacked:
    nets = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets.append(Net(NetConfig(d_in, (), 2)))
    return Stacked(nets).to(device)  # no standardisation: the data are N(0, 1) already


def fit_batched(x: torch.Tensor, y: torch.Tensor, seeds: list[int],
                soft: torch.Tensor | None = None, kd: torch.Tensor | None = None,
                epochs: int = EPOCHS) -> Stacked:
    """Logistic regression per model, ``x (S, n, d)``, full-batch SGD as the official code.

    Models with ``kd[s]`` true learn with Eq. 1 (rho = 0.5, T = 1) from the teacher logits
    ``soft (S, n, 2)``; the others with cross-entropy alone. Each model's loss is its own
    mean, so batching changes nothing in any model's updates.
    """
    model = _linear_models(x.shape[-1], seeds, x.device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(epochs):
        logits = model(x)  # (S, n, 2)
        loss = task_loss_rows(logits, y, False)  # (S, n)
        if soft is not None:
            with_kd = RHO * loss + (1 - RHO) * kd_loss_rows(logits, soft, 1.0, False)
            loss = torch.where(kd[:, None], with_kd, loss)
        opt.zero_grad(set_to_none=True)
        loss.mean(-1).sum().backward()
        opt.step()
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
    run_seeds = [derive_seed(seed, r) for r in range(runs)]
    cells = [(i, r) for i in range(len(settings)) for r in range(runs)]
    data: list[GaussianData] = [
        make_gaussian(replace(settings[i].spec, seed=run_seeds[r])) for i, r in cells]
    init = [derive_seed(run_seeds[r], _SEED_INIT) for _, r in cells]

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
            torch.randperm(d1, generator=generator(run_seeds[r], _SEED_RANDOM_CHANNELS))[
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
    student_init = [derive_seed(s, 1) for s in init] * n_models
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
    experiment: Experiment
    runs: int
    rows: list[dict]
    seconds: float


def reproduce(name: str, runs: int = 10, seed: int = 42, device: str | torch.device = "cpu",
              progress: Progress = no_progress,
              clock: Callable[[], float] | None = None) -> Reproduction:
    """Run one experiment; each row holds per-model mean, std and runs, and the paper's."""
    import time

    experiment = get_experiment(name)
    if not isinstance(runs, int) or runs < 2:
        raise option_error("runs", "a whole number >= 2", runs)
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


def reproduce_avmnist(data_dir: str | Path, runs: int = 10, seed: int = 0,
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

    from cmkd_doctor.classifiers import KD, TrainOptions, train_classifiers
    from cmkd_doctor.splits import fit_and_validation, read_split
    from cmkd_doctor.training import predict

    if not isinstance(runs, int) or runs < 2:
        raise option_error("runs", "a whole number >= 2", runs)
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
    fit, val = fit_and_validation(split.train, y_all, seed)

    def rows(array: np.ndarray, index: np.ndarray) -> torch.Tensor:
        return rows_to(array, index, device)

    audio = np.load(folder / "audio.npy", mmap_mode="r", allow_pickle=False)
    image = np.load(folder / "image.npy", mmap_mode="r", allow_pickle=False)
    both = {k: torch.cat([rows(image, r), rows(audio, r)], 1)
            for k, r in (("fit", fit), ("val", val), ("test", split.test))}
    aud = {k: rows(audio, r) for k, r in (("fit", fit), ("val", val), ("test", split.test))}
    y = {k: torch.as_tensor(y_all[r]).to(device)
         for k, r in (("fit", fit), ("val", val), ("test", split.test))}
    n_classes = int(y_all.max()) + 1

    def accuracy(net, x: torch.Tensor) -> float:
        return 100 * float((predict(net, x).argmax(1) == y["test"]).float().mean())

    teachers = {}
    for name, x in (("um_kd", aud), ("cm_kd", both)):
        net = train_classifiers(x["fit"], y["fit"], n_classes, False,
                                TrainOptions(hidden=TEACHER_HIDDEN), [derive_seed(seed, 61)],
                                val=(x["val"], y["val"]), progress=progress,
                                task=f"teacher {name}")[0]
        teachers[name] = (net, x)
    seeds = [derive_seed(seed, 62, r) for r in range(runs)]
    student = TrainOptions(hidden=STUDENT_HIDDEN)
    results = {}
    baseline = train_classifiers(aud["fit"], y["fit"], n_classes, False, student, seeds,
                                 val=(aud["val"], y["val"]), progress=progress,
                                 task="students no_kd")
    base_runs = [accuracy(net, aud["test"]) for net in baseline]
    results["no_kd"] = {"teacher": None, "rho_0": base_runs, "rho_0.5": base_runs}
    for name, (teacher, x) in teachers.items():
        results[name] = {"teacher": accuracy(teacher, x["test"])}
        for rho in (0.0, 0.5):
            kd = KD(train=predict(teacher, x["fit"]), val=predict(teacher, x["val"]), rho=rho)
            nets = train_classifiers(aud["fit"], y["fit"], n_classes, False, student, seeds,
                                     val=(aud["val"], y["val"]), kd=kd, progress=progress,
                                     task=f"students {name} rho {rho:g}")
            results[name][f"rho_{rho:g}"] = [accuracy(net, aud["test"]) for net in nets]
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
