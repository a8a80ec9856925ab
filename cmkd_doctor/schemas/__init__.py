"""JSON Schemas of every JSON document cmkd-doctor writes: its outputs as a contract.

Every document carries ``"schema"`` (its name here) and ``"schema_version"``
(:data:`SCHEMA_VERSION`). The schemas are built from shared parts in
:mod:`cmkd_doctor.schemas.builder`, so a gamma estimate or a verdict is described once
wherever it appears, and shipped as ``cmkd_doctor/schemas/NAME.schema.json`` (JSON Schema
draft 2020-12, self-contained); ``cmkd-doctor schema NAME`` prints one. This module reads
them: it imports nothing of the package but its errors, so every module may stamp and
check its documents. A test keeps the files equal to what the builder builds and
validates real outputs of every command against them.

The version rises when a field a reader may rely on is removed, renamed or changes
type; new fields do not raise it (every object admits more properties than it lists).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from cmkd_doctor.errors import unknown_name

# 2: pair-level gamma, pairing and chance checks, stability over the channels that matter,
# mfh_ordering not_interpreted
# 3: a row's deltas are paired differences over the seeds both rows share (null for a
# baseline against itself), with vs_none and vs_regular; advice items are steps
# {code, text, command}; best_delta_vs_regular null when Regular-KD is best
SCHEMA_VERSION = 3
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# name -> (what it describes, where it appears)
DOCUMENTS: dict[str, tuple[str, str]] = {
    "rank": ("a ranking (Algorithm 1) with its inputs, options, checks and gamma estimate",
             "RUN/rank.json; rank --json (with the salience)"),
    "teacher": ("a derived teacher's sidecar", "RUN/teachers/NAME.json; derive-teacher --json"),
    "comparison": ("one distill call: its rows (Table 4), options and verdict",
                   "distill --json"),
    "distill": ("every result distilled on one ranking", "RUN/distill.json"),
    "diagnosis": ("rank, comparison and advice of one diagnose", "diagnose --json"),
    "report": ("everything a run directory holds", "report --format json"),
    "compare": ("several runs side by side: a summary row, the diagnosis and the report "
                "of each", "report --compare RUN RUN ... --format json"),
    "datasets": ("the built-in and paper data sets", "examples list --json"),
    "reproduction": ("a reproduction of one of the paper's experiments",
                     "examples reproduce --json"),
    "truth": ("the planted truth of generated Gaussian data", "truth.json of examples make "
              "gaussian"),
    "dataset": ("what a prepared data set holds", "NAME.json of examples make NAME"),
    "multiview": ("a multi-view set converted from its published file",
                  "DATA_ROOT/multiview/NAME/multiview.json of examples fetch NAME"),
    "features": ("where extracted features come from", "the .json beside extract's .npy"),
    "network": ("a user's whole teacher masked at the ranked layer",
                "derive-teacher --model --json"),
}


def stamp(name: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its schema's name and version first."""
    if name not in DOCUMENTS:
        raise KeyError(name)
    return {"schema": name, "schema_version": SCHEMA_VERSION,
            **{k: v for k, v in document.items() if k not in ("schema", "schema_version")}}


def schema(name: str) -> dict[str, Any]:
    """The shipped JSON Schema of document ``name`` (see :data:`DOCUMENTS`)."""
    if name not in DOCUMENTS:
        raise unknown_name("schema NAME", DOCUMENTS, name)
    return json.loads(resources.files(__package__).joinpath(f"{name}.schema.json")
                      .read_text(encoding="utf-8"))


def check(name: str, document: Any) -> None:
    """Raise ``ValueError`` naming the first field of ``document`` that its shipped schema
    ``name`` does not allow (a version other than :data:`SCHEMA_VERSION` included).
    Needs ``jsonschema``; without it only the version is checked."""
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {version!r}; this cmkd-doctor reads and writes "
                         f"{SCHEMA_VERSION}")
    try:
        from jsonschema import Draft202012Validator
    except ImportError:  # a minimal install: the version is what can be checked
        return
    errors = sorted(Draft202012Validator(schema(name)).iter_errors(document),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        where = ".".join(map(str, error.absolute_path)) or "(the document)"
        raise ValueError(f"'{where}': {error.message}")
