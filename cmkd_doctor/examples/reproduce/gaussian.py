"""The paper's synthetic Gaussian experiments (Sec. 5.2, Appendix B.2): Table 2, Fig. 2
and Fig. 3, with the paper's figures and a rerun of the official code beside ours.

Two protocols (``--protocol``); docs/reproductions.md lists every difference in one table.

``official`` (the default) does what the official scripts do (zihuixue/MFH at commit
e6e4e85: ``gauss/main_modify_gamma.py`` for Table 2, ``gauss/main.py`` for the
figures), described here in words:

- Data (Eq. 27): x* has d coordinates, ``y = 1(<delta, x*> > 0)``; x^a copies x*[J1]
  and x^b copies x*[J2] into the channels of the same index, every other channel is
  N(0, 1) noise. Run r draws from NumPy's legacy generator seeded ``seed + r``, in the
  scripts' order, so ``--seed 42`` (Table 2) and ``--seed 0`` (figures) draw the very
  numbers the official runs drew. Table 2: delta = ones, d1 = d2 = 50, 10 a-specific
  and 5 to 30 shared decisive channels (gamma = 1/3 ... 3/4), plus gamma = 0.25 as 15
  a-specific + 5 shared, which the official grid does not hold. Fig. 2: delta ~ N(0, I)
  (one draw of 500, shared by every setting of a run), d1 = 25, d2 = 50, d = 20.
  Fig. 3: the same delta, d1 = d2 = 50, x* of 50 coordinates whatever alpha.
- Models: logistic regressions (``nn.Linear(width, 2)``), full-batch SGD, lr 0.1, 1000
  epochs, initialised in the scripts' order from torch's generator seeded ``seed + r``
  (the figures: ``seed + r + 1``, which the script reseeds before its test draw).
- The KD student's loss (``main.py`` ``train_kd``, lines 80-95): ``CrossEntropyLoss()``
  plus ``KLDivLoss()`` of log_softmax(student) against softmax(teacher), weights
  [1, 1], T = 1. ``KLDivLoss``'s default reduction 'mean' averages over rows *and*
  classes, so per row this is CE + KL / K: an effective rho of 2/3 at K = 2.
- Data flow of Table 2 (``main_modify_gamma.py`` ``run``, lines 150-193): the regular
  teacher trains on the first draw; then a fresh draw of 200 rows replaces it, and the
  No-KD, Regular-KD and KD students and the modality-general and random teachers all
  train on that fresh draw. The modality-general teacher sees the shared channels, the
  random one as many channels drawn *with replacement* (``np.random.randint``). The
  figures (``main.py`` ``run_mm``) train everything on the one draw.
- The official Table 2 script trains its Regular-KD student with the modalities
  swapped (line 175: the teacher is fed x^b and the student trains on x^a, then is
  tested on x^b). That is fixed here; ``official_swap=True`` reproduces it.

``paper`` reads Appendix B.2 as written: rho = 0.5 in Eq. 1 (0.5 CE + 0.5 KL, the KL
summed over classes), delta ~ N(0, I) everywhere, one training draw of 200 rows for
every model, a random teacher drawing its channels without replacement, Fig. 3 with x*
of |J1 u J2| coordinates (10 to 50), and Table 2 as 5, 10, 15 shared of 20 decisive
coordinates, all of them in x^a.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from cmkd_doctor.choices import Z
from cmkd_doctor.errors import option_error
from cmkd_doctor.examples.official_runs import OFFICIAL_RUNS, OFFICIAL_SOURCE
from cmkd_doctor.io.streaming import RowSet
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.registry import Registry
from cmkd_doctor.schemas import stamp
from cmkd_doctor.training.engine import Schedule, fit
from cmkd_doctor.training.losses import kd_loss_rows, task_loss_rows
from cmkd_doctor.training.mlp import Net, NetConfig, Stacked
from cmkd_doctor.validation import MAX_SEEDS, SEEDS_WHY, whole

EPOCHS, LR, N_TRAIN, N_TEST = 1000, 0.1, 200, 1000
PAPER_SOURCE = ("Xue et al., The Modality Focusing Hypothesis, ICLR 2023: Table 2 and "
                "Sec. 4.2 (Fig. 2: +2.1 points at gamma = 1)")


@dataclass(frozen=True)
class StudentLoss:
    """A KD student's loss per row: ``task * CE + kd * KL(teacher || student)`` at
    T = 1, the KL summed over classes (Eq. 1), or averaged over them as well
    (``kd_per_class``: what torch's ``KLDivLoss()`` does with its default reduction)."""

    task: float
    kd: float
    kd_per_class: bool

    def describe(self) -> str:
        kl = "KL / K" if self.kd_per_class else "KL"
        return f"{self.task:g} CE + {self.kd:g} {kl}"


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    loss: StudentLoss
    fresh: bool  # Table 2: a fresh draw for the students and the derived teachers
    random_with_replacement: bool  # the random teacher's channels
    table2_delta: str  # "ones" or "normal"; the figures always draw delta ~ N(0, I)


PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _protocol in (
    Protocol("official", "what the official scripts do (zihuixue/MFH, e6e4e85)",
             StudentLoss(1.0, 1.0, kd_per_class=True), fresh=True,
             random_with_replacement=True, table2_delta="ones"),
    Protocol("paper", "Appendix B.2 as written (rho = 0.5, delta ~ N(0, I))",
             StudentLoss(0.5, 0.5, kd_per_class=False), fresh=False,
             random_with_replacement=False, table2_delta="normal"),
):
    PROTOCOLS.add(_protocol.name, _protocol, _protocol.description)


@dataclass(frozen=True)
class Layout:
    """Eq. 27 laid out as the official generators do: x* has ``d`` coordinates; x^a
    copies ``x*[j1[0]:j1[1]]`` and x^b copies ``x*[j2[0]:j2[1]]`` into the channels of
    the same index; every other channel is N(0, 1) noise. (Which channel holds which
    coordinate means nothing to a logistic regression.)"""

    d: int
    d1: int
    d2: int
    j1: tuple[int, int]
    j2: tuple[int, int]
    b_first: bool = False  # main.py draws x^b's noise before x^a's

    @property
    def shared(self) -> range:
        return range(max(self.j1[0], self.j2[0]), min(self.j1[1], self.j2[1]))

    @property
    def union(self) -> int:
        return self.j1[1] - self.j1[0] + self.j2[1] - self.j2[0] - len(self.shared)

    @property
    def gamma(self) -> float:
        return len(self.shared) / self.union

    @property
    def alpha(self) -> float:
        return 1 - (self.j2[1] - self.j2[0]) / self.union

    def draw(self, rs: np.random.RandomState, n: int, delta: np.ndarray) -> dict:
        x_star = rs.randn(n, self.d)
        y = x_star @ delta > 0

        def modality(width: int, span: tuple[int, int]) -> torch.Tensor:
            x = rs.randn(n, width)
            x[:, span[0]:span[1]] = x_star[:, span[0]:span[1]]
            return torch.as_tensor(x, dtype=torch.float32)

        if self.b_first:
            xb = modality(self.d2, self.j2)
            xa = modality(self.d1, self.j1)
        else:
            xa = modality(self.d1, self.j1)
            xb = modality(self.d2, self.j2)
        return {"a": xa, "b": xb, "y": torch.as_tensor(y, dtype=torch.long)}


@dataclass(frozen=True)
class Model:
    """One logistic regression of an experiment's run, and where its data come from.

    Attributes
    ----------
    slot
        Its place in the official script's initialisation order (models that the
        official code trains in separate runs of one seed share a slot, and so their
        initial weights).
    draw
        ``"first"``, or ``"students"``: the fresh draw when the protocol has one.
    modality
        What it trains on, ``"a"`` or ``"b"``; teachers are tested on x^a, students on
        x^b.
    columns
        A teacher's channels of x^a: ``"all"``, ``"general"`` (the planted shared ones)
        or ``"random"`` (as many, drawn at random).
    teacher, teacher_reads
        A KD student's teacher, and the modality that teacher is fed.
    """

    name: str
    slot: int
    draw: str
    modality: str
    columns: str = "all"
    teacher: str | None = None
    teacher_reads: str = "a"

    @property
    def is_teacher(self) -> bool:
        return self.name.endswith("_teacher")


TABLE2_MODELS = (  # main_modify_gamma.py run(): the order it initialises them in
    Model("regular_teacher", 0, "first", "a"),
    Model("no_kd", 1, "students", "b"),
    Model("regular_kd", 2, "students", "b", teacher="regular_teacher"),
    Model("general_teacher", 3, "students", "a", columns="general"),
    Model("general_kd", 4, "students", "b", teacher="general_teacher"),
    Model("random_teacher", 3, "students", "a", columns="random"),
    Model("random_kd", 4, "students", "b", teacher="random_teacher"),
)
FIGURE_MODELS = (  # main.py run_mm()
    Model("regular_teacher", 0, "first", "a"),
    Model("regular_kd", 1, "first", "b", teacher="regular_teacher"),
    Model("no_kd", 2, "first", "b"),
)
# main_modify_gamma.py line 175: the regular teacher is fed x^b, the student trains on x^a
OFFICIAL_SWAP = {"regular_kd": {"modality": "a", "teacher_reads": "b"}}


def table2_draws(layout: Layout, protocol: Protocol, seed: int) -> dict:
    """One run's draws as ``main_modify_gamma.py`` ``run()`` makes them, in its order:
    the first draw, the test draw, the students' fresh draw, the random channels."""
    rs = np.random.RandomState(seed)
    delta = np.ones(layout.d) if protocol.table2_delta == "ones" else rs.randn(500)[: layout.d]
    first = layout.draw(rs, N_TRAIN, delta)
    test = layout.draw(rs, N_TEST, delta)
    students = layout.draw(rs, N_TRAIN, delta) if protocol.fresh else first
    k = len(layout.shared)
    random = (rs.randint(0, layout.d1, k) if protocol.random_with_replacement
              else rs.choice(layout.d1, k, replace=False))
    return {"first": first, "test": test, "students": students, "init_seed": seed,
            "columns": {"all": np.arange(layout.d1), "general": np.array(layout.shared),
                        "random": random}}


def figure_draws(layout: Layout, protocol: Protocol, seed: int) -> dict:
    """One run's draws as ``main.py`` ``run_mm()`` makes them: the hyperplane and the
    training draw, then a reseed with ``seed + 1`` for the test draw and the models."""
    rs = np.random.RandomState(seed)
    delta = rs.randn(500)[: layout.d]
    first = layout.draw(rs, N_TRAIN, delta)
    test = layout.draw(np.random.RandomState(seed + 1), N_TEST, delta)
    return {"first": first, "test": test, "students": first, "init_seed": seed + 1,
            "columns": {"all": np.arange(layout.d1)}}


@dataclass(frozen=True)
class Setting:
    """One row of an experiment: its layout, the paper's figures, and a note."""

    label: str
    layout: Layout
    paper: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    axis: str  # "gamma" or "alpha"
    models: tuple[Model, ...]
    draws: Callable[[Layout, Protocol, int], dict]  # one run's data, in the script's order
    settings: dict[str, tuple[Setting, ...]]  # per protocol
    claim: str
    default_seed: int  # the official script's


TABLE2_PAPER = {  # Table 2 of the paper
    0.25: (89.70, 64.84, 59.29, 59.46, 61.01),
    0.50: (89.62, 73.41, 67.64, 67.86, 70.25),
    0.75: (89.70, 79.41, 76.46, 76.53, 77.70),
}
_TABLE2_KEYS = ("regular_teacher", "general_teacher", "no_kd", "regular_kd", "general_kd")


def _table2_setting(specific: int, shared: int, d: int, note: str = "") -> Setting:
    layout = Layout(d=d, d1=50, d2=50, j1=(0, specific + shared), j2=(0, shared))
    paper = TABLE2_PAPER.get(round(layout.gamma, 2))
    return Setting(f"{specific}+{shared}", layout,
                   dict(zip(_TABLE2_KEYS, paper, strict=True)) if paper else {}, note)


def _fig2_setting(overlap: int) -> Setting:
    layout = Layout(d=20, d1=25, d2=50, j1=(10 - overlap, 20 - overlap), j2=(0, 10),
                    b_first=True)
    return Setting(f"overlap {overlap}", layout,
                   {"kd_minus_no_kd": 2.1} if overlap == 10 else {})


def _fig3_setting(specific: int, d: int) -> Setting:
    return Setting(f"{specific}+10", Layout(d=d, d1=50, d2=50, j1=(0, specific + 10),
                                            j2=(0, 10), b_first=True))


EXPERIMENTS: Registry[Experiment] = Registry("examples reproduce EXPERIMENT")
for _experiment in (
    Experiment(
        "table2", "Table 2: regular vs modality-general teacher", "gamma", TABLE2_MODELS,
        table2_draws,
        {"official": (_table2_setting(15, 5, 20, "outside the official grid (15 a-specific "
                                                  "+ 5 shared, as the paper's 0.25)"),
                      *(_table2_setting(10, s, 10 + s) for s in (5, 10, 15, 20, 25, 30))),
         "paper": tuple(_table2_setting(20 - s, s, 20) for s in (5, 10, 15))},
        claim="the modality-general teacher is 10 or more points less accurate than the "
              "regular one, yet its student beats the Regular-KD student",
        default_seed=42),
    Experiment(
        "fig2", "Fig. 2: crossmodal KD as gamma grows", "gamma", FIGURE_MODELS, figure_draws,
        dict.fromkeys(("official", "paper"), tuple(map(_fig2_setting, range(0, 11, 2)))),
        claim="KD helps more as gamma grows: +2.1 points over No-KD at gamma = 1",
        default_seed=0),
    Experiment(
        "fig3", "Fig. 3: crossmodal KD as alpha grows (beta = 0)", "alpha", FIGURE_MODELS,
        figure_draws,
        {"official": tuple(_fig3_setting(a, 50) for a in range(0, 41, 10)),
         "paper": tuple(_fig3_setting(a, a + 10) for a in range(0, 41, 10))},
        claim="the teacher improves as alpha grows, the student does not follow",
        default_seed=0),
):
    EXPERIMENTS.add(_experiment.name, _experiment, _experiment.title)


def plan(experiment: Experiment, official_swap: bool = False) -> tuple[Model, ...]:
    """The experiment's models, with the official Table 2 script's swap if asked."""
    if not official_swap:
        return experiment.models
    return tuple(replace(m, **OFFICIAL_SWAP.get(m.name, {})) for m in experiment.models)


@dataclass
class _Job:
    """One model of one run: its initial network and its rows."""

    net: Net
    x: torch.Tensor  # (n, width) training inputs
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    soft_x: torch.Tensor | None = None  # a teacher: its input on its students' rows
    teacher: int | None = None  # a student: its teacher's job index


def _jobs(models: tuple[Model, ...], draws: dict) -> tuple[list[_Job], list[_Job]]:
    """The teachers' and the students' jobs of one run, initialised in slot order."""
    columns = draws["columns"]

    def inputs(model: Model, part: dict, modality: str | None = None) -> torch.Tensor:
        x = part[modality or model.modality]
        return x[:, columns[model.columns]] if model.is_teacher else x

    widths: dict[int, int] = {}
    for m in models:
        widths.setdefault(m.slot, inputs(m, draws["first"]).shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draws["init_seed"])
        inits = {slot: Net(NetConfig(widths[slot], (), 2)) for slot in sorted(widths)}
    teachers: dict[str, int] = {}
    teacher_jobs, student_jobs = [], []
    students_of = {m.teacher: m for m in models if m.teacher}
    for m in models:
        part = draws[m.draw]
        net = copy.deepcopy(inits[m.slot])
        if m.is_teacher:
            student = students_of[m.name]
            soft_x = inputs(m, draws[student.draw], student.teacher_reads)
            teachers[m.name] = len(teacher_jobs)
            teacher_jobs.append(_Job(net, inputs(m, part), part["y"],
                                     inputs(m, draws["test"]), draws["test"]["y"], soft_x))
        else:
            student_jobs.append(_Job(net, inputs(m, part), part["y"], draws["test"]["b"],
                                     draws["test"]["y"],
                                     teacher=teachers.get(m.teacher)))
    return teacher_jobs, student_jobs


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1]))


def _stack(jobs: list[_Job], width: int, device: torch.device) -> Stacked:
    """The jobs' networks as one stacked model of input ``width``; a narrower network's
    extra inputs are zero, so their weights never move and add nothing."""
    nets = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # leave the global RNG be
        for job in jobs:
            net = Net(NetConfig(width, (), 2))
            net.first.weight.zero_()
            net.first.weight[:, : job.net.config.d_in] = job.net.first.weight
            net.first.bias.copy_(job.net.first.bias)
            nets.append(net)
    return Stacked(nets).to(device)


def fit_batched(model: Stacked, x: torch.Tensor, y: torch.Tensor, loss: StudentLoss,
                soft: torch.Tensor | None = None, kd: torch.Tensor | None = None,
                epochs: int = EPOCHS, progress: Progress = no_progress,
                task: str = "train") -> Stacked:
    """Full-batch SGD (lr 0.1) of every member of ``model`` on its own rows,
    ``x (S, n, d)``, as the official ``train`` and ``train_kd`` do.

    Members with ``kd[s]`` true learn with ``loss`` from the teacher logits
    ``soft (S, n, K)``; the others with cross-entropy alone. Each member has its own
    rows (a grouped array, one group per member) and its own mean loss, so batching
    changes nothing in any member's updates.
    """
    arrays = [x, y] if soft is None else [x, y, soft]
    rows = RowSet.of_tensors([a.transpose(0, 1) for a in arrays],  # (n, S, ...)
                             grouped=range(len(arrays)))
    if soft is not None:
        task_w = torch.where(kd, loss.task, 1.0)[:, None].to(x.device)  # (S, 1)
        kd_w = torch.where(kd, loss.kd, 0.0)[:, None].to(x.device)
        kd_w = kd_w / (soft.shape[-1] if loss.kd_per_class else 1)

    def loss_rows(module: torch.nn.Module, batch: list[torch.Tensor],
                  members: torch.Tensor) -> torch.Tensor:
        logits = module(batch[0])  # (S, n, K)
        task = task_loss_rows(logits, batch[1], False)  # (S, n)
        if soft is None:
            return task
        return (task_w[members] * task
                + kd_w[members] * kd_loss_rows(logits, batch[2], 1.0, False))

    seeds = list(range(model.n_members))  # full batch: no shuffling to seed
    fit(model, loss_rows, rows, Schedule(epochs, LR, batch_size=None, optimizer="sgd"),
        shuffle_seeds=seeds, groups=torch.arange(model.n_members), progress=progress,
        task=task)
    return model


@torch.no_grad()
def _accuracy(model: Stacked, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return 100 * (model(x).argmax(-1) == y).double().mean(-1).cpu().numpy()  # (S,)


def _train(jobs: list[_Job], loss: StudentLoss, device: torch.device,
           soft: torch.Tensor | None = None, progress: Progress = no_progress,
           task: str = "train") -> tuple[Stacked, int, np.ndarray]:
    """Train every job as one stacked model; its test accuracies (%)."""
    width = max(max(j.x.shape[1], j.x_test.shape[1]) for j in jobs)

    def stacked(name: str, dtype=torch.float32) -> torch.Tensor:
        parts = [getattr(j, name) for j in jobs]
        if parts[0].dim() == 2:
            parts = [_pad(p, width) for p in parts]
        return torch.stack(parts).to(device, dtype)

    model = _stack(jobs, width, device)
    kd = torch.tensor([j.teacher is not None for j in jobs], device=device)
    fit_batched(model, stacked("x"), stacked("y", torch.long), loss,
                soft=None if soft is None else soft.to(device), kd=kd, progress=progress,
                task=task)
    return model, width, _accuracy(model, stacked("x_test"), stacked("y_test", torch.long))


def run_experiment(experiment: Experiment, protocol: Protocol, runs: int, seed: int,
                   device: torch.device, official_swap: bool = False,
                   progress: Progress = no_progress) -> list[dict[str, np.ndarray]]:
    """Every setting and run of an experiment; accuracy (%) per run for every model.

    All teachers of all settings and runs train as one stacked model, then all
    students as another.
    """
    models = plan(experiment, official_swap)
    settings = experiment.settings[protocol.name]
    teachers: list[_Job] = []
    students: list[_Job] = []
    for setting in settings:
        for r in range(runs):
            t, s = _jobs(models, experiment.draws(setting.layout, protocol, seed + r))
            for job in s:
                job.teacher = None if job.teacher is None else job.teacher + len(teachers)
            teachers += t
            students += s
    teacher_model, width, teacher_acc = _train(teachers, protocol.loss, device,
                                               progress=progress, task="teachers")
    with torch.no_grad():
        soft_all = teacher_model(torch.stack([_pad(j.soft_x, width) for j in teachers])
                                 .to(device))  # (teachers, n, 2)
    soft = torch.stack([soft_all[j.teacher] if j.teacher is not None
                        else torch.zeros_like(soft_all[0]) for j in students])
    _, _, student_acc = _train(students, protocol.loss, device, soft, progress, "students")

    names_t = [m.name for m in models if m.is_teacher]
    names_s = [m.name for m in models if not m.is_teacher]
    acc_t = teacher_acc.reshape(len(settings), runs, len(names_t))
    acc_s = student_acc.reshape(len(settings), runs, len(names_s))
    return [{**{n: acc_t[i, :, k] for k, n in enumerate(names_t)},
             **{n: acc_s[i, :, k] for k, n in enumerate(names_s)}}
            for i in range(len(settings))]


def _summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
            "runs": values.round(2).tolist()}


DIFFERENCES = {"kd_minus_no_kd": ("regular_kd", "no_kd"),
               "general_kd_minus_regular_kd": ("general_kd", "regular_kd"),
               "random_kd_minus_regular_kd": ("random_kd", "regular_kd")}


@dataclass
class Reproduction:
    """An experiment's rows (per model: mean, std and runs), with the paper's figures
    and the official code's (a rerun at the same seeds) beside them."""

    experiment: Experiment
    protocol: Protocol
    official_swap: bool
    runs: int
    seed: int
    rows: list[dict]
    seconds: float

    @property
    def official_variant(self) -> str | None:
        """Which rerun of the official code compares with this one, if any."""
        if self.protocol.name != "official":
            return None
        if self.experiment.name != "table2":
            return "as shipped"
        return "as shipped" if self.official_swap else "swap fixed"

    def claim_check(self) -> list[str]:
        """What we measure of the paper's claim, with the run-to-run spread and the
        official code's figure beside."""
        lines = []
        key = ("general_kd_minus_regular_kd" if self.experiment.name == "table2"
               else "kd_minus_no_kd")
        for row in self.rows:
            gain = row[key]
            se = gain["std"] / self.runs**0.5
            # the comparison's one rule: beyond Z standard errors of the paired difference
            beyond = "beyond" if abs(gain["mean"]) > Z * se else "within"
            text = (f"{self.experiment.axis} {row[self.experiment.axis]:.2f}: "
                    f"{key.replace('_minus_', ' - ').replace('_', '-')} {gain['mean']:+.2f} "
                    f"± {se:.2f} (SE; {beyond} noise)")
            if self.experiment.name == "table2":
                gap = row["regular_teacher"]["mean"] - row["general_teacher"]["mean"]
                text += f", general teacher {gap:.1f} points below the regular one"
            official = row.get("official", {}).get(key)
            if official:
                text += f"; official code {official['mean']:+.2f}"
            paper = figure(row["paper"], key)
            if paper is not None:
                text += f"; paper {paper:+.2f}"
            lines.append(text)
        return lines

    def to_dict(self) -> dict:
        return stamp("reproduction", {
                "experiment": self.experiment.name, "title": self.experiment.title,
                "protocol": self.protocol.name, "official_swap": self.official_swap,
                "student_loss": self.protocol.loss.describe(),
                "runs": self.runs, "seed": self.seed, "seconds": round(self.seconds, 3),
                "claim": self.experiment.claim, "rows": self.rows, "source": PAPER_SOURCE,
                "official_source": OFFICIAL_SOURCE if self.official_variant else None,
                "official_variant": self.official_variant,
                "official_runs": self.official_rerun().get("runs")})

    def official_rerun(self) -> dict:
        """The official code's rerun that compares with this one: same experiment,
        variant and first seed; ``{}`` when there is none."""
        found = OFFICIAL_RUNS.get((self.experiment.name, self.official_variant), {})
        return found if found.get("seed") == self.seed else {}


def figure(figures: dict, key: str) -> float | None:
    """A model's or a difference's mean from the paper's figures (numbers) or the
    official code's (``{"mean", "std"}``); a difference the paper does not state is
    taken from its two models; ``None`` where neither gives it."""
    def mean(value: Any) -> float:
        return value["mean"] if isinstance(value, dict) else value

    if key in figures:
        return mean(figures[key])
    a, b = DIFFERENCES.get(key, (None, None))
    return mean(figures[a]) - mean(figures[b]) if a in figures and b in figures else None


def reproduce_gaussian(name: str, runs: int = 10, seed: int | None = None,
              device: str | torch.device = "cpu", protocol: str = "official",
              official_swap: bool = False, progress: Progress = no_progress,
              clock: Callable[[], float] | None = None) -> Reproduction:
    """Run one experiment; each row holds per-model mean, std and runs, the paper's
    figures, and the official code's where a rerun of it at these seeds exists.

    ``seed`` is the first run's (run r uses ``seed + r``, as the official scripts do);
    ``None`` takes the official script's: 42 for Table 2, 0 for the figures.
    """
    experiment = EXPERIMENTS[name]
    chosen = PROTOCOLS[protocol]
    whole("runs", runs, 2, maximum=MAX_SEEDS, why=SEEDS_WHY)
    if official_swap and (name != "table2" or chosen.name != "official"):
        raise option_error("official-swap", "used with table2 on --protocol official only "
                           "(the swap is in the official Table 2 script)", True)
    seed = experiment.default_seed if seed is None else whole("seed", seed, 0)
    if seed + runs >= 2**32:  # run r seeds NumPy's legacy generator with seed + r (+ 1)
        raise option_error("seed", f"at most 2**32 - 1 - --runs = {2**32 - 1 - runs}", seed)
    clock = clock or time.perf_counter
    start = clock()
    results = run_experiment(experiment, chosen, runs, seed, torch.device(device),
                             official_swap, progress)
    result = Reproduction(experiment, chosen, official_swap, runs, seed, [], 0.0)
    official = result.official_rerun()
    for setting, found in zip(experiment.settings[chosen.name], results, strict=True):
        row = {"setting": setting.label, "gamma": setting.layout.gamma,
               "alpha": setting.layout.alpha, "note": setting.note}
        row.update({key: _summary(values) for key, values in found.items()})
        for key, (a, b) in DIFFERENCES.items():
            if a in found:
                row[key] = _summary(found[a] - found[b])
        row["paper"] = setting.paper
        row["official"] = official.get("rows", {}).get(setting.label, {})
        result.rows.append(row)
    result.seconds = clock() - start
    return result
