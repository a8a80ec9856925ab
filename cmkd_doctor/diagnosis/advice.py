"""What to try next, each step with the command line that takes it.

A :class:`Step` says why (``text``) and, where a command of the doctor takes the step,
the whole command line (``command``): the subcommand, ``--run`` with the run's absolute
path, every option the run was made with that differs from its default, and the option
values the step changes. Pasted into a shell from any folder it runs as printed. A
step no command of the doctor takes (check a file's row order, train a stronger teacher)
names no option. :func:`advise` decides the steps from a comparison and its ranking; the
terminal, the report and the JSON documents show the same steps.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmkd_doctor import wording as verdict_words
from cmkd_doctor.diagnosis.comparison import BASELINES, Comparison, Difference, Row
from cmkd_doctor.diagnosis.seed_schedule import PRACTICAL
from cmkd_doctor.diagnosis.verdict import USE_A_TEACHER

PROGRAM = "cmkd-doctor"
# the steps that come with a command (tests/test_advice.py runs each as printed)
COMMANDS = ("use_teacher", "more_seeds", "rank_again", "other_ratios", "fewer_nullified",
            "rank_standardized", "rank_longer", "rank_more_restarts")


@dataclass(frozen=True)
class Step:
    """One thing to try next: a code naming it, why, and the command that does it
    (``None`` where no command of the doctor does)."""

    code: str
    text: str
    command: str | None = None

    def __post_init__(self) -> None:
        if self.command is not None and self.code not in COMMANDS:
            raise ValueError(f"step {self.code!r} has a command but is not in COMMANDS")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def command_line(*parts: Iterable[str]) -> str:
    """``cmkd-doctor ARGS`` for each argument list, joined with ``&&``, each argument
    quoted for a POSIX shell."""
    return " && ".join(shlex.join([PROGRAM, *args]) for args in parts)


def _text(value: Any) -> str:
    """An option's value as the command line writes it."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(_text, value)) if value else "0"  # hidden () is --hidden 0
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def _flags(values: dict[str, Any], defaults: dict[str, Any], flags: dict[str, str]
           ) -> list[str]:
    """``--flag value`` for every option of ``flags`` whose value differs from its
    default (a true boolean is the bare flag, a false one its ``--no-`` form)."""
    args: list[str] = []
    for name, flag in flags.items():
        value = values.get(name)
        if value == defaults.get(name):
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif value is not None:
            args += [flag, _text(value)]
    return args


# DistillOptions fields and their flags (train and networks are nested records)
DISTILL_FLAGS = {"teachers": "--teacher", "ratios": "--ratio", "source": "--from",
                 "fill": "--fill", "refit": "--refit", "rho": "--rho",
                 "temperature": "--temperature", "seeds": "--seeds",
                 "max_seeds": "--max-seeds", "seeds_budget": "--seeds-budget",
                 "device": "--device", "seed": "--seed"}
TRAIN_FLAGS = {"hidden": "--hidden", "epochs": "--epochs", "batch_size": "--batch-size",
               "lr": "--lr", "patience": "--patience", "chunk_rows": "--chunk-rows"}
NETWORK_FLAGS = {"student": "--student", "student_inputs": "--student-inputs",
                 "model": "--model", "teacher_inputs": "--teacher-inputs",
                 "layer": "--layer", "weights": "--weights", "channel_axis": "--channel-axis"}


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (tuples as lists), so records and defaults compare."""
    return json.loads(json.dumps(value))


def _distill_defaults(rank_hidden: list[int]) -> dict[str, Any]:
    from cmkd_doctor.diagnosis.options import DistillOptions

    defaults = _plain(asdict(DistillOptions().checked()))
    defaults["train"]["hidden"] = list(rank_hidden)  # the run's, when not given
    return defaults


def _rows_asked(teachers: Iterable[str]) -> set[str]:
    """The teachers a --teacher list computes beyond the baselines (``all`` expanded)."""
    from cmkd_doctor.choices import DERIVED

    found = set()
    for name in teachers:
        found |= set(DERIVED) if name == "all" else {name}
    return found - set(BASELINES)


def distill_args(run: str | Path, options: dict[str, Any], rank_hidden: list[int],
                 **changes: Any) -> list[str]:
    """``distill``'s arguments for the run ``run``: the recorded ``options`` (a
    :class:`~cmkd_doctor.diagnosis.comparison.Comparison`'s) with ``changes`` applied, every
    value that differs from its default written out."""
    values = _plain({**options, **changes})
    defaults = _distill_defaults(rank_hidden)
    if _rows_asked(values["teachers"]) == _rows_asked(defaults["teachers"]):
        values["teachers"] = defaults["teachers"]
    if values["seeds"] != "auto":  # --max-seeds and --seeds-budget act only with auto
        values = {**values, "max_seeds": None, "seeds_budget": None}
        defaults = {**defaults, "max_seeds": None}
    return (["distill", "--run", str(Path(run).absolute())]
            + _flags(values, defaults, DISTILL_FLAGS)
            + _flags(values["train"], defaults["train"], TRAIN_FLAGS)
            + _flags(values["networks"], defaults["networks"], NETWORK_FLAGS))


def rank_args(run: str | Path, document: dict[str, Any], **changes: Any) -> list[str]:
    """``rank``'s arguments that rank the inputs of ``document`` (a ``rank.json``) again
    into ``run`` with its options and ``changes``; options at their protocol's
    defaults are left out."""
    from cmkd_doctor.ranking.options import FLAGS, RankOptions

    values = _plain({**document["options"], **changes})
    if values.get("restarts") is None:  # diagnose's auto: the number it chose
        values["restarts"] = (document.get("stability") or {}).get("restarts", 1)
    defaults = _plain({**asdict(RankOptions.for_protocol(values["protocol"])),
                       "protocol": RankOptions().protocol})
    flags = {f.name: (f.decls[0].split("/")[0] if f.decls else
                      "--" + f.name.replace("_", "-")) for f in FLAGS}
    inputs = [info["path"] + (f":{info['key']}" if info.get("key") else "")
              for info in (document["inputs"][k] for k in ("feats_a", "feats_b", "labels"))]
    return (["rank", *inputs, "--out", str(Path(run).absolute())]
            + _flags(values, defaults, flags))


def derive_args(run: str | Path, row: Row, options: dict[str, Any],
                rank_hidden: list[int]) -> list[str] | None:
    """``derive-teacher``'s arguments that make again the derived teacher of ``row``
    (its mode and ratio, the call's fill, source, seed and training) and export it as
    ONNX beside it in the run's ``teachers/``; ``None`` for a checkpoint row."""
    from cmkd_doctor.choices import DERIVED

    if row.teacher not in DERIVED or not row.teacher_file:
        return None
    run, options = Path(run).absolute(), _plain(options)
    defaults = _distill_defaults(rank_hidden)
    nets = options["networks"]
    if nets.get("model"):  # the user's whole network, masked after --layer
        suffix = ".onnx" if nets["model"].lower().endswith(".onnx") else ".pt2"
        export = run / "teachers" / f"{row.teacher}-r{row.ratio:g}-network{suffix}"
        shape: list[str] = []
        if not Path(nets["model"]).suffix:  # an architecture: one input's shape, given
            from cmkd_doctor.io.inputs import array_shape

            shape = ["--input-shape", _text(list(array_shape(nets["teacher_inputs"])[0][1:]))]
        return (["derive-teacher", "--run", str(run), "--mode", row.teacher, "--ratio",
                 _text(row.ratio)]
                + _flags(options, defaults, {"fill": "--fill", "seed": "--seed"})
                + _flags(nets, defaults["networks"],
                         {k: v for k, v in NETWORK_FLAGS.items()
                          if k in ("model", "layer", "weights", "channel_axis")})
                + shape
                + ["--export-onnx" if suffix == ".onnx" else "--export-pt2", str(export)])
    export = run / "teachers" / f"{Path(row.teacher_file).stem}.onnx"
    return (["derive-teacher", "--run", str(run), "--mode", row.teacher, "--ratio",
             _text(row.ratio)]
            + _flags(options, defaults, {"fill": "--fill", "source": "--from",
                                         "refit": "--refit", "seed": "--seed"})
            + _flags(options["train"], defaults["train"], TRAIN_FLAGS)
            + _flags(options, defaults, {"device": "--device"})
            + ["--export-onnx", str(export)])


def rank_steps(run: str | Path, document: dict[str, Any],
               then: list[str] | None = None) -> list[Step]:
    """What to try when the ranking's own checks fail, each step ranking again into
    ``run`` with the options that address it (and then ``then``, another command's
    arguments: ``distill`` again after a ``diagnose``): the aligned networks agree poorly
    (standardised inputs, or twice the training and patience), or the restarts disagree
    (twice the permutations, more restarts)."""
    from cmkd_doctor.ranking.findings import check_ranking, first

    findings = check_ranking(document)
    options, after = document["options"], [then] if then else []
    steps: list[Step] = []
    alignment = first(findings, "alignment")
    if alignment is not None and not alignment.ok:
        said = (f"The aligned networks agree poorly (alignment "
                f"{alignment.figures['score']:.2f}, below {alignment.figures['threshold']:g}),"
                " so the salience says little about modality-general information")
        if not options.get("standardize", True):
            steps.append(Step("rank_standardized", f"{said}: rank again with every channel "
                              "standardised, so no channel's units dominate.",
                              command_line(rank_args(run, document, standardize=True),
                                           *after)))
        else:
            epochs = 2 * document["aligned"]["epochs_max"]
            patience = 2 * options["patience"]
            steps.append(Step("rank_longer", f"{said}: rank again training the aligned pair "
                              f"up to {epochs} epochs with a patience of {patience}; more rows, "
                              "another layer of the teacher's network, or a modality b that "
                              "predicts the labels better may serve more.",
                              command_line(rank_args(run, document, epochs=epochs,
                                                     patience=patience), *after)))
    stability = first(findings, "stability")
    if stability is not None and not stability.ok:
        figures = stability.figures
        repeats = 2 * options["repeats"]
        restarts = max(3, 2 * figures["restarts"])
        steps.append(Step("rank_more_restarts", f"The ranking changes from one restart to "
                          f"the next: rank again with {repeats} permutations per channel and "
                          f"{restarts} restarts (or with more rows).",
                          command_line(rank_args(run, document, repeats=repeats,
                                                 restarts=restarts), *after)))
    return steps


def _room(need: int, now: int) -> int | None:
    """A round --max-seeds above ``need`` and above ``now`` (the budget the call had),
    or ``None`` past :data:`~cmkd_doctor.diagnosis.seed_schedule.PRACTICAL`."""
    room = max(-(-need // 10) * 10, now + 10 - now % 10)
    return None if need > PRACTICAL or now >= PRACTICAL else min(room, PRACTICAL)


def _unsettled(report: Comparison, best: Row) -> tuple[str, Difference]:
    """The yardstick the best row has not yet clearly beaten (``Control``, ``Regular-KD``
    or ``No-KD``) and that difference as the verdict tested it: at the best row's share of
    the level where it competed for "use X" (the verdict's ``call``), else by the plain
    rule (recomputed for records made before the control)."""
    verdict = report.verdict
    call = verdict.get("call") or {}
    recorded = {"Control": call.get("best_vs_control")
                or (verdict.get("control") or {}).get("best_vs_control"),
                "Regular-KD": call.get("best_vs_regular"), "No-KD": call.get("best_vs_none")}
    rows = report.baselines
    for name, teacher in (("Control", "control"), ("Regular-KD", "regular"),
                          ("No-KD", "none")):
        if teacher not in rows or rows[teacher] is best:
            continue
        found = recorded[name]
        d = (Difference(**{k: found[k] for k in ("delta", "se", "z", "seeds", "threshold")})
             if found else report.difference(best, rows[teacher]))
        if not d.gain:
            return name, d
    raise ValueError("every comparison of the best row is settled")


def _more_seeds(report: Comparison, best: Row, rank_hidden: list[int]) -> Step:
    """The best row is not clearly better than Regular-KD or the control: the command
    that gives that comparison the seeds it needs, or why no number of seeds would."""
    name, d = _unsettled(report, best)
    need = d.seeds_to_settle()
    options = report.options
    now = options["max_seeds"] if options["seeds"] == "auto" else d.seeds
    whose = "Regular-KD" if best.teacher == "regular" else f"The {best.label} teacher"
    said = (f"{whose} gives the best student, but not clearly better than "
            f"{verdict_words.yardstick(name)} "
            f"({d.delta:+.2f} points at {d.seeds} seeds)")
    room = None if need is None else _room(need, now)
    if room is None:
        return Step("equal", f"{said}: over {PRACTICAL} seeds would be needed to tell them "
                    "apart, so the two are about equal; "
                    + ("the control's softer targets serve as well, with no teacher."
                       if name == "Control" else
                       "keep the regular teacher unless the other is cheaper to run."))
    state = next((s["state"] for s in (report.seeding or {}).get("decisions", [])
                  if s["comparison"] == f"{best.label} - {name}"), None)
    changes: dict[str, Any] = {"seeds": "auto", "max_seeds": room}
    if state == "time":  # the --seeds-budget stopped it: that budget would stop it again
        changes["seeds_budget"] = None
    return Step("more_seeds", f"{said}: about {need} seeds would tell; give it up to "
                f"{room} before " + ("relying on it." if name == "Control" else
                                     "switching to it."),
                command_line(distill_args(report.run, options, rank_hidden, **changes)))


def _other_ratios(ratios: Any) -> Any:
    """The ratios to try next: 0.25, 0.5 and 0.75 with those distilled, or the search
    (``auto``) once those were; ``None`` after a search."""
    if ratios == "auto":
        return None
    tried = set(ratios)
    wanted = sorted(tried | {0.25, 0.5, 0.75})
    return "auto" if len(wanted) == len(tried) else wanted


def advise(report: Comparison, document: dict[str, Any]) -> list[Step]:
    """What to try next, in the order a user would: the data first, then the teacher
    the verdict chose, the seeds that would decide, the ranking, the ratios."""
    verdict, options, run = report.verdict, report.options, report.run
    hidden = document["options"]["hidden"]
    data = _data_steps(verdict, document)
    if data:  # nothing else can be read before the rows are right
        return data
    steps: list[Step] = []
    if not verdict.get("ranking_reliable", True):  # mend the ranking first
        steps += rank_steps(run, document, distill_args(run, options, hidden))
    steps += _teacher_steps(report, hidden)
    if verdict["mfh_ordering_holds"] is False and verdict.get("ranking_reliable", True):
        metrics = document["aligned"]["metrics"]["a"]["test"] or {}
        repeats = 2 * document["options"]["repeats"]
        steps.append(Step(
            "rank_again", "The students do not order as the hypothesis predicts, so the "
            "ranking may be unreliable here (check the aligned networks' test "
            f"{next(iter(metrics), 'metric')} above): rank again with {repeats} "
            "permutations per channel, then distil again.",
            command_line(rank_args(run, document, repeats=repeats),
                         distill_args(run, options, hidden))))
    steps += _ratio_steps(report, hidden)
    gamma = document.get("gamma_estimate") or {}
    decision = verdict.get("decision")
    if verdict.get("beyond_shared"):
        steps.append(Step("beyond_shared", verdict_words.beyond_shared_step(report)))
    elif gamma.get("little_to_transfer") and decision not in USE_A_TEACHER:
        alone = ("training the student on the control's softer targets, with no teacher,"
                 if decision == "use_control" else "training the student alone")
        steps.append(Step(
            "little_shared", "The modalities share little decisive information (gamma "
            f"estimate {gamma['value']:.2f}, {gamma['low']:.2f}-{gamma['high']:.2f}): no "
            "teacher on this modality can pass on much. A teacher modality closer to the "
            "student's, features from a later layer of the teacher's network, or "
            f"{alone} may serve better."))
    return steps or [Step("nothing", "Nothing to change: the comparison is as the "
                          "hypothesis predicts.")]


def _data_steps(verdict: dict[str, Any], document: dict[str, Any]) -> list[Step]:
    """The rows to check first: a modality at chance, or pairs that share nothing (unless
    a teacher helps beyond what they share: then the verdict says so, and nothing here
    contradicts it)."""
    blind = verdict.get("at_chance") or []
    if blind:
        return [Step("check_rows", f"Modality {side} predicts the labels no better than "
                     "chance: check that its features file lists the same samples, in the "
                     "same order, as the labels file (and as the other modality's file).")
                for side in blind]
    if verdict.get("paired") is False and not verdict.get("beyond_shared"):
        pairing = document.get("pairing") or {}
        return [Step("check_order",
                     "The rows of a and b share nothing detectable beyond their class "
                     f"(rank.json pairing: score {pairing.get('score', 0):.2f} against "
                     f"{pairing.get('null', 0):.2f} with b's rows shuffled within class). "
                     "Check that both feature files list the same samples in the same "
                     "order. If they do (or the pairs were assembled by class, as "
                     "AV-MNIST's are), a teacher on modality a can pass on only the class: "
                     "expect crossmodal KD to act as label smoothing, and no ratio or "
                     "derived teacher to change that.")]
    return []


def _teacher_steps(report: Comparison, hidden: Any) -> list[Step]:
    """A teacher too weak to teach, the derived teacher the verdict chose, or the seeds
    that would decide whether it is better."""
    verdict, options, run = report.verdict, report.options, report.run
    best = next(r for r in report.rows if r.label == verdict["best"])
    steps = []
    decision = verdict.get("decision")
    if decision == "use_control":
        steps.append(_use_control(report))
    if verdict.get("weak_teacher") and decision == "weak_teacher":  # else a row helps
        steps.append(Step("stronger_teacher",
                          "The regular teacher is below the student trained alone, so its "
                          "soft labels carry less than the labels do: distil from a "
                          "stronger teacher on its modality if one can be trained (more "
                          "rows, a larger network, longer training), or train the student "
                          "alone; no ratio or derived teacher adds what the teacher itself "
                          "does not know."))
    if decision == "use_teacher" or (decision is None and verdict["best_is_clear"]):
        args = derive_args(run, best, options, hidden)
        tied = (verdict.get("call") or {}).get("tied") or []
        steps.append(Step("use_teacher", f"Distil from the {best.label} teacher"
                          + (f" ({best.teacher_file}); this exports it as ONNX for your own "
                             "training code." if args else f" ({best.teacher}).")
                          + (f" The {' and '.join(tied)} teacher"
                             + ("s are" if len(tied) > 1 else " is")
                             + " within run-to-run noise of it and would serve as well."
                             if tied else ""),
                          None if args is None else command_line(args)))
    elif decision == "undecided" and best.teacher != "none":
        steps.append(_more_seeds(report, best, hidden))
    return steps


def _use_control(report: Comparison) -> Step:
    """The control's targets, with their formula (no command of the doctor trains the
    user's own student; the targets are what to train it on)."""
    control = report.baselines["control"]
    facts = control.control or {}
    options = report.options
    if "labelled_class_probability" in facts:
        a = facts["labelled_class_probability"]
        targets = (f"probability {a:.3f} on the labelled class and (1 - {a:.3f}) / (K - 1) "
                   "on each other class (K classes)")
    elif "off_class_probability" in facts:
        e = facts["off_class_probability"]
        targets = f"probability 1 - {e:.3f} on each present label and {e:.3f} on each absent"
    else:
        targets = "label-smoothed targets as soft as Regular-KD's"
    return Step("use_control", f"Train the student without a teacher on the control's "
                f"targets: {targets}, as the logits T log p in the same KD loss (rho "
                f"{options.get('rho', 0.5):g}, T {options.get('temperature', 1.0):g}); "
                "docs/commands.md gives the formula.")


def _ratio_steps(report: Comparison, hidden: Any) -> list[Step]:
    """Other nullifying ratios when the regular teacher does not help, or fewer channels
    nullified when the general teacher does not beat it."""
    verdict, options, run = report.verdict, report.options, report.run
    rows = {(r.teacher, r.ratio): r for r in report.rows}
    regular = rows[("regular", None)]
    little = verdict.get("little_to_transfer")
    general = rows.get(("general", _general_ratio(report)))
    if not verdict["kd_helps"] and not little and not verdict.get("weak_teacher"):
        ratios = _other_ratios(options["ratios"])
        return [Step(
            "other_ratios", "The regular teacher does not clearly help the student: much of "
            "what it knows may be specific to its modality. Derived teachers at other "
            "nullifying ratios may keep more of what transfers (paper Fig. 5); a teacher "
            "trained to be modality-general (paper Sec. 5.3) is another way.",
            None if ratios is None else command_line(distill_args(run, options, hidden,
                                                                  ratios=ratios)))]
    if general is not None and general.student_mean <= regular.student_mean \
            and not little and general.ratio > 0.1:
        fewer = round(general.ratio / 2, 2)
        return [Step(
            "fewer_nullified", f"At r = {general.ratio:g} the modality-general teacher does "
            "not beat the regular one; nullifying fewer channels may keep decisive ones.",
            command_line(distill_args(run, options, hidden, teachers=["general"],
                                      ratios=[fewer])))]
    return []


def _general_ratio(report: Comparison) -> float | None:
    """The ratio whose general teacher the advice reads: the sweep's sweet spot, the
    search's, or the first distilled."""
    sweet = report.verdict.get("sweet_spot")
    if sweet:
        return sweet["ratio"]
    if report.search:
        return report.search["best_ratio"]
    ratios = report.options["ratios"]
    return None if ratios == "auto" else ratios[0]


__all__ = ["COMMANDS", "Step", "advise", "command_line", "derive_args", "distill_args",
           "rank_args", "rank_steps"]
