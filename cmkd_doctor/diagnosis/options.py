"""The options of ``distill`` (:class:`DistillOptions`), declared once: the CLI's
defaults are these, and the advice reads them to leave defaults out of its commands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cmkd_doctor.choices import FILLS, TEACHER_CHOICES
from cmkd_doctor.diagnosis import seed_schedule
from cmkd_doctor.errors import InputError, option_error
from cmkd_doctor.io.files import regular_file
from cmkd_doctor.teachers.masks import TeacherSpec
from cmkd_doctor.teachers.whole_networks import NetworkOptions
from cmkd_doctor.training.stacked import TrainOptions
from cmkd_doctor.validation import MAX_SEEDS, SEEDS_WHY, number, parse_list, whole

# --ratio auto: a coarse grid, then a refinement around its best (paper Fig. 5's sweet
# spot); a full grid at the refined step would be FULL_GRID distillations.
COARSE, REFINE_STEP = (0.1, 0.3, 0.5, 0.7, 0.9), 0.1
FULL_GRID = 19  # 0.05, 0.10, ..., 0.95
CHECKPOINTS = (".safetensors", ".onnx")


@dataclass(frozen=True)
class DistillOptions:
    """Options of ``distill``; defaults are the CLI's.

    Attributes
    ----------
    teachers
        Names from :data:`TEACHER_CHOICES` or checkpoint paths; No-KD and Regular-KD
        rows are always added.
    ratios
        Nullifying ratios; several give a sweep; ``"auto"`` searches for the ratio whose
        general teacher gives the best student (see :data:`COARSE`).
    source, fill, refit
        How derived teachers are made (see :class:`cmkd_doctor.teachers.masks.TeacherSpec`).
    train
        Student (and trained-teacher) training; ``hidden=None`` takes the run's.
    networks
        Network students on raw modality-b rows and the whole teacher network on raw
        modality-a rows (:class:`~cmkd_doctor.teachers.whole_networks.NetworkOptions`); by
        default the students and teachers are MLPs on the run's features.
    """

    teachers: tuple[str, ...] = ("all",)
    ratios: tuple[float, ...] = (0.5,)
    source: str = "trained"
    fill: str = "mean"
    refit: bool = False
    rho: float = 0.5
    temperature: float = 1.0
    seeds: int | str = "auto"  # diagnose's rule and default: the same run, the same answer
    max_seeds: int | None = None  # --seeds auto: seed_schedule.MAX_SEEDS when not given
    seeds_budget: float | None = None  # --seeds auto: seconds of student training
    train: TrainOptions = TrainOptions()
    device: str = "auto"
    seed: int = 0
    networks: NetworkOptions = NetworkOptions()

    @property
    def auto_ratio(self) -> bool:
        return self.ratios in ("auto", ("auto",))

    def checked(self) -> DistillOptions:
        teachers = parse_list(self.teachers, "teacher", str)
        ratios = COARSE if self.auto_ratio else parse_list(self.ratios, "ratio", float)
        if not teachers:
            raise option_error("teacher", "one or more teacher names", self.teachers)
        for name in teachers:
            if name not in TEACHER_CHOICES and Path(name).suffix.lower() not in CHECKPOINTS:
                raise option_error("teacher", f"one of {', '.join(TEACHER_CHOICES)} or a "
                                   ".safetensors or .onnx checkpoint", name)
            if name not in TEACHER_CHOICES:
                regular_file(name, f"--teacher {name}")
        # checkpoints by absolute path, as the record and the advice's commands need them
        teachers = tuple(n if n in TEACHER_CHOICES else str(Path(n).absolute())
                         for n in teachers)
        if not ratios or any(not isinstance(r, (int, float)) or not 0 < r < 1
                             for r in ratios):
            raise option_error("ratio", "a number in (0, 1), or a comma list of them",
                               ",".join(f"{r:g}" for r in ratios) or self.ratios)
        FILLS.check(self.fill)
        number("rho", self.rho, "a number in [0, 1]", low=0, high=1)
        number("temperature", self.temperature, "a positive number", low=0, open_low=True)
        seeds = self.seeds  # "auto", or a whole number (text from the CLI and YAML)
        if isinstance(seeds, str):
            text = seeds.strip().lower()
            seeds = "auto" if text == "auto" else int(text) if text.isdigit() else None
        if seeds is None:
            raise option_error("seeds", "a whole number of seeds, or auto", self.seeds)
        max_seeds = self.max_seeds
        if seeds != "auto":
            whole("seeds", seeds, 1, maximum=MAX_SEEDS, why=SEEDS_WHY)
            for name, value in (("max-seeds", max_seeds), ("seeds-budget", self.seeds_budget)):
                if value is not None:  # an option that cannot act is refused, not ignored
                    raise InputError(f"--{name} {value} acts only with --seeds auto, and "
                                     f"--seeds {seeds} fixes the seeds: drop --{name}, or "
                                     f"give --seeds auto")
        else:
            max_seeds = seed_schedule.MAX_SEEDS if max_seeds is None else max_seeds
            whole("max_seeds", max_seeds, 2, maximum=seed_schedule.PRACTICAL,
                  why=seed_schedule.PRACTICAL_WHY)
        if self.seeds_budget is not None:
            number("seeds_budget", self.seeds_budget, "a positive number of seconds", low=0,
                   open_low=True)
        whole("seed", self.seed, 0)
        TeacherSpec(source=self.source).checked()  # validates --from
        networks = self.networks.checked()
        if networks.model is not None:
            paths = [n for n in teachers if n not in TEACHER_CHOICES]
            if paths:
                raise InputError(f"--teacher {paths[0]}: with --model the teachers are your "
                                 "whole network, as given (Regular-KD) and masked; give "
                                 "teacher names, not checkpoints")
            if self.source != "trained" or self.refit:
                raise InputError("--from and --refit make feature-level teachers; with "
                                 "--model the teachers are your whole network, masked")
        return replace(self, teachers=teachers, networks=networks, seeds=seeds,
                       max_seeds=max_seeds,
                       ratios="auto" if self.auto_ratio else tuple(sorted(set(ratios))),
                       train=self.train.checked())

    def key(self, train: TrainOptions) -> str:
        """A short hash of everything that changes a student's result but the teacher."""
        fields = {"rho": self.rho, "temperature": self.temperature, "seeds": self.seeds,
                  **({"max_seeds": self.max_seeds, "seeds_budget": self.seeds_budget}
                     if self.seeds == "auto" else {}),
                  "seed": self.seed, "train": train.to_dict(), "fill": self.fill,
                  "refit": self.refit, "source": TeacherSpec(source=self.source).to_dict()[
                      "source"]}
        if self.networks.used:  # rows of network students or teachers are their own
            fields["networks"] = asdict(self.networks)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
