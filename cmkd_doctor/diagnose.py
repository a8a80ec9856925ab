"""The whole doctor in one call: rank -> derive teachers -> distill -> verdict and advice.

``diagnose`` runs Algorithm 1 on the user's arrays (or a built-in example), derives the
modality-general, modality-specific and random teachers at one ratio, distils a student
from each against No-KD and Regular-KD, and says in plain words what the comparison
means and what to try next. It writes the same run directory as the single commands.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from cmkd_doctor import distributed
from cmkd_doctor.classifiers import TrainOptions
from cmkd_doctor.datasets import DATASETS
from cmkd_doctor.distill import DistillOptions, DistillReport, distill, record
from cmkd_doctor.errors import InputError
from cmkd_doctor.gaussian import (
    GaussianSpec,
    make_gaussian,
    ranking_against_truth,
    write_gaussian,
)
from cmkd_doctor.inputs import load_paired
from cmkd_doctor.outputs import check_out_dir
from cmkd_doctor.ranking import RankOptions, RankResult, rank
from cmkd_doctor.rundir import DEFAULT_RUN, Run, write_rank
from cmkd_doctor.runtime import Progress, no_progress, resolve_device

EXAMPLE_FILES = ("feats_a.npy", "feats_b.npy", "labels.npy")
SWEEP = (0.1, 0.25, 0.5, 0.75, 0.9)  # diagnose --sweep (paper Fig. 5)


@dataclass(frozen=True)
class DiagnoseConfig:
    """Everything ``diagnose`` runs with, one section per stage (as in the YAML file)."""

    rank: RankOptions = RankOptions()
    distill: DistillOptions = DistillOptions(teachers=("general", "specific", "random"))
    gaussian: GaussianSpec = GaussianSpec()


_SECTIONS = {"rank": RankOptions, "distill": DistillOptions, "gaussian": GaussianSpec}
_TOP_KEYS = {"example", "inputs", "out", *_SECTIONS}
_DISTILL_TRAIN = {f.name for f in fields(TrainOptions)}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a diagnose YAML file (``yaml.safe_load``) and check every key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"{path}: not valid YAML{at}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of sections (rank:, distill:, ...)")
    for key, value in raw.items():
        if key not in _TOP_KEYS:
            raise InputError(f"{path}: unknown key '{key}'; valid: {', '.join(sorted(_TOP_KEYS))}")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise InputError(f"{path}: '{key}' must be a mapping of options")
            valid = {f.name for f in fields(_SECTIONS[key])}
            if key == "distill":
                valid = (valid - {"train"}) | _DISTILL_TRAIN
            for option in value:
                if option not in valid:
                    raise InputError(f"{path}: unknown option '{key}.{option}'; valid: "
                                     f"{', '.join(sorted(valid))}")
    if "inputs" in raw:
        inputs = raw["inputs"]
        if not isinstance(inputs, dict) or set(inputs) != {"feats_a", "feats_b", "labels"}:
            raise InputError(f"{path}: 'inputs' must name feats_a, feats_b and labels")
        # paths in a config file are relative to the file
        raw["inputs"] = {k: str((path.parent / v).resolve()) if ":" not in str(v)
                         else str(v) for k, v in inputs.items()}
    if (raw.get("rank") or {}).get("split"):
        raw["rank"]["split"] = str((path.parent / raw["rank"]["split"]).resolve())
    return raw


def build_config(raw: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> DiagnoseConfig:
    """Options from the YAML sections, then from flags (``overrides``), which win."""
    config = DiagnoseConfig()
    sections = {}
    for name in _SECTIONS:
        values = {**(raw.get(name) or {}), **{k: v for k, v in overrides.get(name, {}).items()
                                              if v is not None}}
        base = getattr(config, name)
        if name == "distill":
            train = {k: values.pop(k) for k in list(values) if k in _DISTILL_TRAIN}
            if train:
                values["train"] = replace(base.train, **train)
        sections[name] = replace(base, **values)
    return DiagnoseConfig(**sections)


@dataclass
class Diagnosis:
    """What ``diagnose`` found: the ranking, the comparison and the advice."""

    out: Path
    rank: RankResult
    rank_document: dict[str, Any]
    report: DistillReport
    advice: list[str]
    truth: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"command": "diagnose", "out": str(self.out),
                "rank": {k: v for k, v in self.rank_document.items()
                         if k not in ("permuted_distance",)},
                "salience": self.rank.salience.tolist(),
                **{k: v for k, v in self.report.to_dict().items() if k != "command"},
                "advice": self.advice, "truth": self.truth}


def prepare_example(name: str, out: Path, config: DiagnoseConfig) -> tuple[list[Path], dict]:
    """Write a built-in example's arrays under ``out/example``; returns paths and truth."""
    if name not in DATASETS:
        raise InputError(f"--example must be one of {', '.join(DATASETS)}; got {name!r}")
    if name != "gaussian":
        raise InputError(f"--example {name}: not built in yet ({DATASETS[name].availability});"
                         " see 'cmkd-doctor examples list'")
    data = make_gaussian(config.gaussian)
    folder = out / "example"
    write_gaussian(data, folder)
    return [folder / f for f in EXAMPLE_FILES], data.truth


def diagnose(
    inputs: list[str | Path] | None = None,
    example: str | None = None,
    out: str | Path = DEFAULT_RUN,
    config: DiagnoseConfig | None = None,
    progress: Progress = no_progress,
) -> Diagnosis:
    """Rank, derive general/specific/random teachers, distil, and advise.

    Give either ``inputs`` (feats_a, feats_b, labels) or ``example`` (a built-in name).
    """
    config = config or DiagnoseConfig()
    if (inputs is None) == (example is None):
        raise InputError("diagnose needs FEATS_A FEATS_B LABELS or --example NAME (one of "
                         "them)")
    out = check_out_dir(out)
    rank_options = config.rank.checked()
    distill_options = config.distill.checked()  # every option checked before any work
    truth = None
    if example is not None:
        inputs, truth = prepare_example(example, out, config)
        # under torchrun rank 0 alone wrote the example: the others wait for it
        resolve_device(rank_options.device)
        distributed.barrier()
    if len(inputs) != 3:
        raise InputError("diagnose needs three inputs: FEATS_A FEATS_B LABELS")
    data = load_paired(*inputs)
    result = rank(data, rank_options, progress)
    document = write_rank(out, result, data)
    # distil on the run just written, without reading and hashing the inputs again
    run = Run(out, document, result.salience, result.split, data)
    report = distill(run, distill_options, progress)
    record(report)
    truth_summary = (ranking_against_truth(result.salience, truth, rank_options.permute)
                     if truth else None)
    return Diagnosis(out, result, document, report, advise(report, document, truth_summary),
                     truth_summary)


def advise(report: DistillReport, rank_document: dict, truth: dict | None) -> list[str]:
    """What to try next, in the order a user would."""
    verdict = report.verdict
    rows = {(r.teacher, r.ratio): r for r in report.rows}
    sweet = verdict.get("sweet_spot")
    ratio = sweet["ratio"] if sweet else (report.search or {}).get("best_ratio") or \
        report.options["ratios"][0]
    general = rows.get(("general", ratio))
    regular = rows[("regular", None)]
    advice = []
    if general is not None and verdict["best"] == general.label:
        if verdict["best_is_clear"]:
            advice.append(f"Distil from the modality-general teacher (teachers/general-r"
                          f"{ratio:g}.safetensors in the run directory; 'cmkd-doctor "
                          f"derive-teacher --mode general --ratio {ratio:g} --export-onnx "
                          "teacher.onnx' exports it for your own training code).")
        else:
            advice.append("The modality-general teacher gives the best student, but not "
                          "clearly: rerun with more --seeds (say 10) before switching to it.")
    if verdict["mfh_ordering_holds"] is False:
        metrics = rank_document["aligned"]["metrics"]["a"]["test"] or {}
        advice.append("The students do not order as the hypothesis predicts, so the ranking "
                      "may be unreliable here: check the aligned networks' test "
                      f"{next(iter(metrics), 'metric')} above, raise --repeats, or rank with "
                      "--hidden 0 or more data.")
    if not verdict["kd_helps"]:
        advice.append("The regular teacher does not clearly help the student: much of what "
                      "it knows may be specific to its modality. Try other ratios (--ratio "
                      "0.25 or 0.75), or a teacher trained to be modality-general (paper "
                      "Sec. 5.3).")
    if general is not None and general.student_mean <= regular.student_mean:
        advice.append(f"At r = {ratio:g} the modality-general teacher does not beat the "
                      "regular one; nullifying fewer channels may keep decisive ones.")
    if truth and truth["precision"] is not None and truth["precision"] < 1:
        advice.append(f"The ranking recovered {truth['precision']:.0%} of the planted shared "
                      "channels; more repeats or rows sharpen it.")
    return advice or ["Nothing to change: the comparison is as the hypothesis predicts."]
