"""The whole doctor in one call: rank -> derive teachers -> distill -> verdict and advice.

``diagnose`` runs Algorithm 1 on the user's arrays (or a built-in example), derives the
modality-general, modality-specific and random teachers at one ratio, distils a student
from each against No-KD and Regular-KD, and says in plain words what the comparison
means and what to try next. It writes the same run directory as the single commands.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pydantic

from cmkd_doctor import distributed
from cmkd_doctor.devices import resolve_device
from cmkd_doctor.diagnosis.comparison import Comparison
from cmkd_doctor.diagnosis.distill import DistillOptions, check_ratios, distill
from cmkd_doctor.errors import InputError, shown
from cmkd_doctor.examples.datasets import DATASETS
from cmkd_doctor.examples.downloads import FetchOptions
from cmkd_doctor.examples.gaussian import GaussianSpec, ranking_against_truth
from cmkd_doctor.io.files import read_yaml
from cmkd_doctor.io.inputs import load_paired
from cmkd_doctor.io.rundir import DEFAULT_RUN, Run, RunDir
from cmkd_doctor.progress import Progress, no_progress
from cmkd_doctor.ranking.run import RankOptions, RankResult, rank
from cmkd_doctor.schemas import stamp
from cmkd_doctor.training.mlp import parse_hidden
from cmkd_doctor.training.stacked import TrainOptions

SWEEP = (0.1, 0.25, 0.5, 0.75, 0.9)  # diagnose --sweep (paper Fig. 5)


@dataclass(frozen=True)
class DiagnoseConfig:
    """Everything ``diagnose`` runs with, one section per stage (as in the YAML file)."""

    rank: RankOptions = RankOptions(restarts=None)  # 3 restarts when they are cheap
    distill: DistillOptions = DistillOptions(teachers=("general", "specific", "random"),
                                             seeds="auto")  # seeds where the verdict needs them
    gaussian: GaussianSpec = GaussianSpec()
    data: FetchOptions = FetchOptions()  # where an example's files are, and --download


_SECTIONS = {"rank": RankOptions, "distill": DistillOptions, "gaussian": GaussianSpec,
             "data": FetchOptions}
_TOP_KEYS = {"example", "inputs", "out", *_SECTIONS}
_DISTILL_TRAIN = {f.name for f in fields(TrainOptions)}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a diagnose YAML file (``yaml.safe_load``) and check every key."""
    path = Path(path)
    raw = read_yaml(path) or {}
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
            raw[key] = _typed(path, key, value)
    for key in ("example", "out"):
        if key in raw and not isinstance(raw[key], str):
            raise InputError(f"{path}: '{key}' must be text; got {shown(raw[key])}")
    if "inputs" in raw:
        inputs = raw["inputs"]
        if not isinstance(inputs, dict) or set(inputs) != {"feats_a", "feats_b", "labels"}:
            raise InputError(f"{path}: 'inputs' must name feats_a, feats_b and labels")
        for key, value in inputs.items():
            if not isinstance(value, str) or not value:
                raise InputError(f"{path}: 'inputs.{key}' must be a file path; got "
                                 f"{shown(value)}")
        if "example" in raw:
            raise InputError(f"{path}: give 'example' or 'inputs', not both")
        # paths in a config file are relative to the file
        raw["inputs"] = {k: str((path.parent / v).resolve()) if ":" not in str(v)
                         else str(v) for k, v in inputs.items()}
    for section, key in (("rank", "split"), ("data", "data_dir")):
        if (raw.get(section) or {}).get(key):
            raw[section][key] = str((path.parent / raw[section][key]).expanduser().resolve())
    _check_values(path, raw)
    return raw


def _check_values(path: Path, raw: dict[str, Any]) -> None:
    """Each section's values checked as its options are, a bad one named by the file and
    its key (``c.yaml: distill.max_seeds must be ...``), not by the flag it stands for."""
    config = build_config({name: raw[name] for name in _SECTIONS if name in raw}, {})
    for name in _SECTIONS:
        if name not in raw:
            continue
        try:
            getattr(config, name).checked()
        except InputError as exc:
            key = (exc.option or "").removeprefix("--").replace("-", "_")
            if exc.option is None or key not in raw[name]:
                continue  # not one of the file's values: diagnose checks it again to run
            raise InputError(f"{path}: {name}.{key}"
                             + str(exc).removeprefix(exc.option)) from None


def _typed(path: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A section's values checked against the types of its options (pydantic, lax:
    YAML 1.1 reads ``1e-3`` as text, which becomes the number it means), each wrong type
    named by its key. ``true`` is never a number."""
    cls = _SECTIONS[section]
    hints = {**typing.get_type_hints(cls),
             **(typing.get_type_hints(TrainOptions) if section == "distill" else {})}
    typed = {}
    for key, value in values.items():
        hint = hints[key]
        if key == "hidden":  # "0", 256, "512,256" or [512, 256]
            try:
                typed[key] = None if value is None else parse_hidden(value)
            except InputError as exc:
                raise InputError(f"{path}: {section}.hidden = {shown(value)}: {exc}") from None
            continue
        takes_bool = hint is bool or bool in typing.get_args(hint)
        try:
            if isinstance(value, bool) and not takes_bool:
                raise ValueError("true/false is not a value of this option")
            typed[key] = pydantic.TypeAdapter(hint).validate_python(value)
        except (ValueError, pydantic.ValidationError) as exc:
            why = (exc.errors()[0]["msg"] if isinstance(exc, pydantic.ValidationError)
                   else str(exc))
            raise InputError(f"{path}: {section}.{key} = {shown(value)}: {why}") from None
    return typed


def build_config(raw: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> DiagnoseConfig:
    """Options from the YAML sections, then from flags (``overrides``), which win."""
    config = DiagnoseConfig()
    sections = {}
    for name in _SECTIONS:
        values = {**(raw.get(name) or {}), **{k: v for k, v in overrides.get(name, {}).items()
                                              if v is not None}}
        base = getattr(config, name)
        if name == "rank":  # what was given over its protocol's defaults over diagnose's
            sections[name] = RankOptions.from_given(values, base)
            continue
        if name == "distill":
            train = {k: values.pop(k) for k in list(values) if k in _DISTILL_TRAIN}
            if train:
                values["train"] = replace(base.train, **train)
        sections[name] = replace(base, **values)
    return DiagnoseConfig(**sections)


def resolve(
    inputs: list[str | Path] | None = None,
    example: str | None = None,
    out: str | Path | None = None,
    config: str | Path | None = None,
    ratio: str | None = None,
    sweep: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[str | Path] | None, str | None, Path, DiagnoseConfig]:
    """What a ``diagnose`` call runs on, from its arguments, a YAML ``config`` and
    command-line ``overrides`` (which win): the inputs or the example, the run directory
    and the options of every stage. ``sweep`` distils at :data:`SWEEP`."""
    raw = load_config(config) if config else {}
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if sweep:
        if ratio is not None:
            raise InputError("--sweep and --ratio both choose the ratios; give one")
        ratio = ",".join(map(str, SWEEP))
    overrides.setdefault("distill", {})["ratios"] = ratio
    settings = build_config(raw, overrides)
    if not inputs and example is None:
        example = raw.get("example")
        if example is None and "inputs" in raw:
            inputs = [raw["inputs"][k] for k in ("feats_a", "feats_b", "labels")]
    return inputs or None, example, Path(out or raw.get("out", DEFAULT_RUN)), settings


@dataclass
class Diagnosis:
    """What ``diagnose`` found: the ranking, the comparison and the advice."""

    out: Path
    rank: RankResult
    rank_document: dict[str, Any]
    report: Comparison
    truth: dict[str, Any] | None = None

    @property
    def advice(self) -> list[dict[str, Any]]:
        """What to try next (:func:`~cmkd_doctor.diagnosis.advice.advise`), as the comparison
        has it."""
        return self.report.advice

    def to_dict(self) -> dict[str, Any]:
        comparison = self.report.to_dict()
        return stamp("diagnosis", {
            "command": "diagnose", "out": str(self.out),
            "rank": {k: v for k, v in self.rank_document.items()
                     if k not in ("permuted_distance",)},
            "salience": self.rank.salience.tolist(),
            **{k: v for k, v in comparison.items()
               if k not in ("command", "schema", "schema_version")},
            "advice": self.advice, "truth": self.truth})


def prepare_example(name: str, out: RunDir, config: DiagnoseConfig,
                    progress: Progress = no_progress) -> tuple[list[Path], dict | None]:
    """The arrays of a built-in example (``NAME`` or ``NAME:A,B`` for views A and B):
    their paths (feats_a, feats_b, labels) and the truth of generated data. A real
    example is read from the data root, fetched there first with ``config.data.download``.
    """
    base, _, picked = name.partition(":")
    dataset = DATASETS[base]
    views = None
    if picked:
        try:
            a, b = (int(v) for v in picked.split(","))
        except ValueError:
            raise InputError(f"--example {name}: views are given as NAME:A,B, two view "
                             "numbers") from None
        views = (a, b)
    if dataset.make is None:
        raise InputError(f"--example {base}: not built in yet ({dataset.availability});"
                         " see 'cmkd-doctor examples list'")
    return dataset.make(out.example_dir, config.gaussian, views, config.data, progress)


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
    run_dir = RunDir(out).check_replaceable()
    rank_options = config.rank.checked()
    distill_options = config.distill.checked()  # every option checked before any work
    config.data.checked()
    resolve_device(rank_options.device)
    resolve_device(distill_options.device)
    # the example's arrays, the ranking, the teachers and the results land together
    with run_dir.transaction(drop=RunDir.RANKING) as staged:
        result, document, report, truth = _diagnose(inputs, example, staged, config,
                                                    rank_options, distill_options, progress)
    return Diagnosis(run_dir.path, result, document, report, truth)


def _diagnose(inputs: list[str | Path] | None, example: str | None, staged: RunDir,
              config: DiagnoseConfig, rank_options: RankOptions,
              distill_options: DistillOptions, progress: Progress
              ) -> tuple[RankResult, dict[str, Any], Comparison, dict[str, Any] | None]:
    truth = None
    if example is not None:
        inputs, truth = prepare_example(example, staged, config, progress)
        # under torchrun rank 0 alone wrote the example (in its staging folder): the
        # others read it from there
        inputs = distributed.from_main([str(p) for p in inputs])
    if len(inputs) != 3:
        raise InputError("diagnose needs three inputs: FEATS_A FEATS_B LABELS")
    data = load_paired(*inputs)
    # on the ranked modality's width, before the ranking: a hopeless request writes nothing
    check_ratios(distill_options,
                 (data.xa if rank_options.permute == "a" else data.xb).shape[1],
                 f"modality {rank_options.permute}")
    result = rank(data, rank_options, progress)
    document = staged.write_rank(result, data)
    truth = (ranking_against_truth(result.salience, truth, rank_options.permute)
             if truth else None)
    # distil on the run just computed, without reading and hashing the inputs again
    run = Run(staged, document, result.salience, result.split, data)
    report = distill(run, distill_options, progress)
    staged.record(report)
    return result, document, report, truth
