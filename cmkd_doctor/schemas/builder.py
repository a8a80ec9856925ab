"""The builder of the shipped JSON Schemas (:mod:`cmkd_doctor.schemas`): shared parts,
each document's body, and :func:`write_all`, which rewrites the files (``python -m
cmkd_doctor.schemas``). Recorded options are typed from their dataclasses' annotations,
so this module imports the options it describes; nothing at run time imports it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from cmkd_doctor.diagnosis.verdict import DECISIONS
from cmkd_doctor.schemas import DIALECT, DOCUMENTS, SCHEMA_VERSION

# -- building blocks --------------------------------------------------------------------

def _t(*kinds: str) -> dict[str, Any]:
    return {"type": kinds[0] if len(kinds) == 1 else list(kinds)}


NUM, INT, STR, BOOL = _t("number"), _t("integer"), _t("string"), _t("boolean")
OBJ = _t("object")


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None,
            **extra: Any) -> dict[str, Any]:
    """An object with these properties (the ``required`` ones always there)."""
    return {"type": "object", "properties": {**required, **(optional or {})},
            "required": list(required), **extra}


def _or_null(part: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [part, {"type": "null"}]}


NUMBERS = _array(NUM)
METRICS = {"type": "object", "additionalProperties": NUM}  # metric name -> value

INPUT = _object({"path": STR, "key": _or_null(STR), "shape": _array(INT), "dtype": STR,
                 "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}})

SHARES = _object({"a": NUM, "b": NUM, "ab": NUM})
CROSS = _object({"same_row": NUM, "same_class": NUM, "beyond_label": NUM,
                 "beyond_label_low": NUM, "beyond_label_high": NUM})
GAMMA = _object(
    {"value": NUM, "low": NUM, "high": NUM, "method": STR,
     "label_level": _object({"value": NUM, "low": NUM, "high": NUM, "method": STR,
                             "explained": SHARES, "explained_low": SHARES}),
     "cross": _object({"a_to_b": CROSS, "b_to_a": CROSS}), "n_rows": INT,
     "little_to_transfer": BOOL, "threshold": NUM},
    {"bootstrap": INT, "null_draws": INT},
    description="Sec. 4's gamma estimated from the data (docs/concepts.md, 'Is there anything to "
                "transfer?'): value, low and high are the pair-level estimate (what a and "
                "b hold about the same row beyond its class) with a 95% bootstrap "
                "interval; label_level is the share of the label both views predict")

PAIRING = _object(
    {"score": NUM, "null": NUM, "z": _or_null(NUM), "paired": BOOL, "threshold": NUM},
    {"draws": INT, "shuffled_share": NUM, "rule": STR},
    description="do the rows of a and b share more than their class: score is how much "
                "of each view's decisive score the other's same row predicts, null the "
                "same with b's rows shuffled within class")

CHANCE = _object({"at_chance": BOOL, "explained": NUM, "explained_low": NUM},
                 {"metric": STR, "value": NUM, "chance": NUM, "rows": STR})

STABILITY = _object(
    {"restarts": INT, "threshold": NUM, "kendall_tau": _or_null(NUM),
     "top_overlap": _or_null(NUM), "stable": _or_null(BOOL)},
    {"auto": BOOL, "decisive": _or_null(INT), "decisive_channels": _array(INT),
     "fdr": NUM, "rule": STR, "flop_per_restart": NUM,
     "all_channels": _or_null(_object({"kendall_tau": _or_null(NUM),
                                       "top_overlap": _or_null(NUM)}))},
    description="agreement of the restarts over the channels whose salience is "
                "significantly above zero (decisive); all_channels keeps the same figures "
                "over every informative channel")

STEP = _object(
    {"code": STR, "text": STR,
     "command": {**_or_null(STR), "description": "the whole command line that takes the "
                                                 "step, runnable as printed from any "
                                                 "folder; null where no command does it"}},
    description="one thing to try next")

def _typed_fields(cls: type) -> dict[str, Any]:
    """Every field of dataclass ``cls`` typed as its annotation says (``int | None``:
    an integer or null; a tuple of ints: an array of integers; a dataclass: an object of
    its fields), so a recorded option edited into another type is refused by name."""
    import dataclasses
    import typing

    kinds = {int: INT, float: NUM, str: STR, bool: BOOL, type(None): _t("null")}
    hints = typing.get_type_hints(cls)

    def of(hint: Any) -> dict[str, Any]:
        if hint in kinds:
            return kinds[hint]
        if dataclasses.is_dataclass(hint):  # nested options: typed the same way
            return _object(_typed_fields(hint), additionalProperties=False)
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (tuple, list):
            return _array(of(args[0]))
        return {"anyOf": [of(a) for a in args]}  # a union

    return {f.name: of(hints[f.name]) for f in dataclasses.fields(cls)}


def _rank_options() -> dict[str, Any]:
    from cmkd_doctor.ranking.options import RankOptions

    return _object(_typed_fields(RankOptions), additionalProperties=False)


def _distill_options() -> dict[str, Any]:
    from cmkd_doctor.diagnosis.options import DistillOptions

    return _object(_typed_fields(DistillOptions), additionalProperties=False)


RANK = _object(
    {"command": {"const": "rank"}, "run_id": STR, "created": STR,
     "inputs": _object({"feats_a": INPUT, "feats_b": INPUT, "labels": INPUT}),
     "labels": _object({"task": {"enum": ["single-label", "multi-label"]},
                        "n_classes": INT, "classes": _t("array")}),
     "options": _rank_options(),
     "environment": _object({"cmkd_doctor": STR, "python": STR, "torch": STR, "numpy": STR,
                             "platform": STR, "device": STR}),
     "split": _object({"file": STR, "n_train": INT, "n_test": INT}),
     "aligned": _object({"epochs_max": INT, "epochs_run": INT, "metrics": OBJ,
                         "files": _object({"a": STR, "b": STR})}),
     "permuted_modality": {"enum": ["a", "b"]},
     "permuted_rows": {"enum": ["train", "test"]},
     "unpermuted_distance": NUM,
     "alignment": _object({"score": NUM, "reliable": BOOL, "threshold": NUM}),
     "gamma_estimate": GAMMA,
     "pairing": PAIRING,
     "chance": _object({"a": CHANCE, "b": CHANCE}),
     "groups": _or_null(_object(
         {"method": {"enum": ["auto", "file"]}, "threshold": _or_null(NUM),
          "file": _or_null(STR), "count": INT, "multi_channel": INT, "ids": _array(INT)},
         {"salience": NUMBERS})),
     "stability": STABILITY,
     "constant_channels": _array(INT),
     "negative_salience": OBJ,
     "standardization": _object({"enabled": BOOL}),
     "permuted_distance": _object({"file": STR, "mean": NUMBERS, "std": NUMBERS}),
     "salience_file": STR,
     "timings": {"type": "object", "additionalProperties": NUM},
     "warnings": _array(STR)},
    {"files": {"type": "object", "additionalProperties": STR},
     "salience": NUMBERS, "advice": _array(STEP),
     "unpermuted_distance_per_restart": {**NUMBERS, "minItems": 1}})

DIFFERENCE = _object(
    {"delta": NUM, "se": NUM, "z": _or_null(NUM), "seeds": INT, "clear": BOOL,
     "threshold": NUM},
    description="row a minus row b, seed by seed over the seeds both share: the mean "
                "difference, its standard error, z = delta / se (the sign test's when "
                "every seed gives the same difference; null with one seed), and whether "
                "|z| passes the threshold of the call's rule")

RESULT = _object(
    {"teacher": STR, "ratio": _or_null(NUM), "label": STR, "metric": STR,
     "unit": {"const": "%"}, "teacher_metric": _or_null(NUM), "student_mean": NUM,
     "student_std": NUM, "student_runs": NUMBERS,
     "delta_vs_none": {**_or_null(NUM), "description": "vs_none's delta"},
     "delta_vs_regular": {**_or_null(NUM), "description": "vs_regular's delta"},
     "teacher_file": _or_null(STR),
     "teacher_metrics": _or_null(METRICS),
     "student_metrics": {"type": "object", "additionalProperties": _object(
         {"mean": NUM, "std": NUM, "runs": NUMBERS})}},
    {"vs_none": _or_null(DIFFERENCE), "vs_regular": _or_null(DIFFERENCE),
     "vs_control": _or_null(DIFFERENCE),
     "delta_vs_control": {**_or_null(NUM), "description": "vs_control's delta"},
     "control": {**_object({"rule": STR, "matched_entropy": NUM},
                           {"labelled_class_probability": NUM,
                            "off_class_probability": NUM}),
                 "description": "the control row's targets: the labelled class's "
                                "probability (or an off class's, multi-label), matched to "
                                "Regular-KD's mean soft-label entropy"}})

SEED_DECISION = _object(
    {"comparison": STR, "seeds": INT, "delta": NUM, "z": _or_null(NUM), "threshold": NUM,
     "state": {"enum": ["clear", "budget", "futile", "time"],
               "description": "clear; undecided at --max-seeds (budget); too close to "
                              "settle within twice --max-seeds (futile); or undecided when "
                              "the next look would pass --seeds-budget (time)"}})

SEEDING = _object(
    {"rule": {"const": "sequential"}, "alpha": NUM, "looks": _array(INT), "per_look": NUM,
     "max_seeds": INT, "decisions": _array(SEED_DECISION),
     "row_seeds": {"type": "object", "additionalProperties": INT},
     "seeds_budget": _or_null(NUM)},
    description="--seeds auto: the schedule of looks, the per-look level of its paired "
                "tests, each comparison's outcome and each row's seeds")

VERDICT = _object(
    {"kd_helps": BOOL, "kd_delta": NUM, "kd_delta_se": _or_null(NUM), "kd": OBJ,
     "ranking_reliable": BOOL, "little_to_transfer": BOOL, "ranking": OBJ,
     "mfh_ordering": {"type": "object",
                      "additionalProperties": {"enum": ["holds", "fails", "undetermined",
                                                        "not_interpreted"]},
                      "description": "per ratio; not_interpreted whenever the ranking is "
                                     "unreliable (the text then withholds the ordering)"},
     "mfh_ordering_holds": _or_null(BOOL),
     "sweet_spot": _or_null(_object({"ratio": NUM, "student_mean": NUM})),
     "best": STR, "best_delta_vs_regular": _or_null(NUM), "best_is_clear": BOOL,
     "text": STR},
    {"mfh_ordering_detail": OBJ, "best_delta_vs_regular_se": _or_null(NUM),
     "action": STR, "headline": STR, "paired": _or_null(BOOL), "at_chance": _array(STR),
     "decision": {"enum": list(DECISIONS),
                  "description": "what to do, decided once; action, headline, text, "
                                 "advice and report follow it"},
     "call": _object({"competing": INT, "share": INT, "tied": _array(STR),
                      "best_vs_none": _or_null(DIFFERENCE),
                      "best_vs_regular": _or_null(DIFFERENCE),
                      "best_vs_control": _or_null(DIFFERENCE)},
                     description="the rows that compete for 'use X' (derived and "
                                 "checkpoint teachers acted on), the best row's share of "
                                 "the level under Holm's step-down rule (each of its "
                                 "comparisons is tested at level / share), its comparisons "
                                 "at that share (null when the best row is a baseline), "
                                 "and the rows within run-to-run noise of it"),
     "beyond_shared": {**BOOL, "description": "a teacher clearly beats No-KD and the "
                       "control while the gamma estimate says little is shared (or the "
                       "rows share only their class): no advice then says to skip KD"},
     "weak_teacher": {**_or_null(_object({"teacher": NUM, "student_alone": NUM,
                                          "student_alone_se": NUM, "gap": NUM})),
                      "description": "the regular teacher's test metric below the No-KD "
                                     "students' mean by more than 2 standard errors of it"},
     "seeds": {**_array(SEED_DECISION),
               "description": "--seeds auto: the comparisons the decision rests on, the "
                              "seeds each took and its state"},
     "control": {**_or_null(_object({"vs_none": DIFFERENCE, "best": STR,
                                     "best_vs_control": _or_null(DIFFERENCE)},
                                    {"explains_gain": BOOL})),
                 "description": "the knowledge-free control against No-KD, the best row "
                                "against the control (at its share of the level), and "
                                "whether the control explains the gain (decision "
                                "use_control); null without a control row"}})

COMPARISON = _object(
    {"command": {"const": "distill"}, "run": STR, "metric": STR,
     "options": _distill_options(),
     "options_key": STR, "results": _array(RESULT), "verdict": VERDICT,
     "search": _or_null(OBJ), "timings": {"type": "object", "additionalProperties": NUM},
     "advice": _array(STEP)},
    {"seeds": SEEDING})

DISTILL = _object(
    {"command": {"const": "distill"}, "rank": _object({"run_id": STR}),
     "results": {"type": "object", "additionalProperties": {
         "allOf": [RESULT, _object({"options": _distill_options(), "options_key": STR,
                                    "created": STR})]}},
     "last_verdict": VERDICT, "last_timings": OBJ, "cmkd_doctor": STR},
    {"last_options_key": STR, "last_advice": _array(STEP)})

TEACHER = _object(
    {"spec": OBJ, "train": _or_null(OBJ), "rank": _object({"run_id": STR}), "name": STR,
     "mode": {"enum": ["general", "specific", "random", "regular"]}, "ratio": NUM,
     "seed": INT, "source": STR, "fill": STR, "refit": BOOL, "modality": {"enum": ["a", "b"]},
     "n_channels": INT, "constant_channels": _array(INT), "standardized": BOOL,
     "nullified": _array(INT), "mask": _array({"enum": [0, 1]}),
     "fill_values": NUMBERS, "metrics": _or_null(METRICS), "created": STR,
     "cmkd_doctor": STR},
    {"sha256": STR, "file": STR, "reused": BOOL, "onnx": _or_null(STR)})

NETWORK = _object(
    {"name": STR, "mode": {"enum": ["general", "specific", "random", "regular"]},
     "ratio": NUM, "seed": INT, "fill": STR, "model": STR, "layer": STR, "channel_axis": INT,
     "modality": {"enum": ["a", "b"]}, "n_channels": INT, "nullified": _array(INT),
     "mask": _array({"enum": [0, 1]}), "fill_values": NUMBERS,
     "rank": _object({"run_id": STR}), "format": {"enum": ["onnx", "program", "architecture"]},
     "onnx": _or_null(STR), "pt2": _or_null(STR)})

DIAGNOSIS = _object(
    {"command": {"const": "diagnose"}, "out": STR, "rank": OBJ, "salience": NUMBERS,
     "run": STR, "metric": STR, "results": _array(RESULT), "verdict": VERDICT,
     "advice": _array(STEP), "truth": _or_null(OBJ)},
    {"seeds": SEEDING})

REPORT = _object(
    {"run": STR, "rank": RANK,
     "salience": _object({"values": NUMBERS, "top": _array(OBJ), "bottom": _array(OBJ),
                          "repeats": INT}),
     "teachers": _array(TEACHER),
     "students": _or_null(_object({"results": _array(RESULT), "verdict": _or_null(VERDICT),
                                   "other_options": INT}, {"advice": _array(STEP)})),
     "truth": _or_null(OBJ)})

SUMMARY = _object(
    {"label": STR, "run": STR, "teacher_inputs": STR, "student_inputs": STR,
     "permuted_modality": {"enum": ["a", "b"]}, "alignment": _or_null(NUM),
     "alignment_reliable": _or_null(BOOL), "stability": _or_null(NUM),
     "stable": _or_null(BOOL),
     "gamma": _or_null(_object({"value": NUM, "low": NUM, "high": NUM})),
     "paired": _or_null(BOOL),
     "metric": _or_null(STR), "kd_delta": _or_null(NUM), "kd_delta_se": _or_null(NUM),
     "best": _or_null(STR), "best_student": _or_null(NUM), "gain_vs_regular": _or_null(NUM),
     "gain_vs_regular_se": _or_null(NUM), "gain_vs_none": _or_null(NUM),
     "best_is_clear": BOOL, "advice": STR},
    description="one run's row of report --compare's summary table; kd_delta is "
                "Regular-KD minus No-KD, the gains are the best student's, in points of "
                "its metric, with paired standard errors over seeds")

DIAGNOSED = _object(
    {"verdict": STR, "recommended": _or_null(_object({"teacher": STR, "file": STR,
                                                      "export": STR})),
     "gain": _or_null(STR), "warnings": _array(STR), "reasoning": _or_null(STR)},
    {"advice": _array(STEP)},
    description="what the report's first screen says")

COMPARE = _object({"runs": {**_array(_object({"label": STR, "summary": SUMMARY,
                                              "diagnosis": DIAGNOSED, "report": REPORT})),
                            "minItems": 2}})

DATASET_FIELDS = ("name", "title", "task", "modalities", "licence", "availability",
                  "prepare")
DATASETS = _object({"datasets": _array(_object(dict.fromkeys(DATASET_FIELDS, STR)))})

REPRODUCTION = _object(
    {"experiment": STR, "runs": INT, "seed": INT, "seconds": NUM,
     "rows": _array(OBJ), "claim": STR, "source": STR})

TRUTH = _object(
    {"generator": STR, "spec": OBJ, "J1": _array(INT), "J2": _array(INT),
     "shared": _array(INT), "alpha": NUM, "beta": NUM, "gamma": NUM,
     "gamma_weighted": NUM, "delta": NUMBERS,
     **{f"channels_{s}": _object({k: _array(INT) for k in ("general", "specific", "noise")})
        for s in ("a", "b")}})

DATASET = _object({"dataset": STR, "n": INT, "n_train": INT, "n_test": INT})

MULTIVIEW = _object({"dataset": STR, "source": STR, "sha256": STR, "n": INT,
                     "views": _array(INT), "converted": STR})

FEATURES = _object(
    {"shape": _array(INT), "rows": _array(STR)},
    {name: _or_null(_t("string", "integer")) for name in ("layer", "backbone", "weights",
                                                         "onnx", "program", "pool", "size")})

BODIES = {"rank": RANK, "teacher": TEACHER, "comparison": COMPARISON, "distill": DISTILL,
          "diagnosis": DIAGNOSIS, "report": REPORT, "compare": COMPARE, "datasets": DATASETS,
          "reproduction": REPRODUCTION, "truth": TRUTH, "dataset": DATASET,
          "multiview": MULTIVIEW, "features": FEATURES, "network": NETWORK}


def build(name: str) -> dict[str, Any]:
    """The JSON Schema of document ``name``, as shipped."""
    what, where = DOCUMENTS[name]
    body = BODIES[name]
    head = {"schema": {"const": name}, "schema_version": {"const": SCHEMA_VERSION}}
    return {"$schema": DIALECT,
            "$id": f"https://cmkd-doctor.invalid/schemas/{name}/{SCHEMA_VERSION}",
            "title": f"cmkd-doctor {name} document, version {SCHEMA_VERSION}",
            "description": f"{what[0].upper()}{what[1:]} ({where}).",
            **{k: v for k, v in body.items() if k not in ("properties", "required")},
            "properties": {**head, **body["properties"]},
            "required": [*head, *body["required"]]}


def write_all() -> None:
    """Write every ``NAME.schema.json`` beside this module (after changing a schema:
    ``python -m cmkd_doctor.schemas``)."""
    folder = resources.files("cmkd_doctor.schemas")
    for name in DOCUMENTS:
        with resources.as_file(folder.joinpath(f"{name}.schema.json")) as path:
            path.write_text(json.dumps(build(name), indent=2) + "\n", encoding="utf-8")
