"""What the ranking's checks found, as data: one :class:`Finding` per check, decided once.

``rank`` runs the checks (the aligned networks' agreement, stability over restarts,
pairing, chance, the gamma estimate, constant, negative and all-zero salience) and
records their figures in ``rank.json``; :func:`check_ranking` reads those figures into
findings, and everything downstream reads the findings: ``rank``'s warnings, whether
the ranking is reliable (:func:`cmkd_doctor.wording.reliability`), the verdict, the
report and the terminal summary. None of them decides a check again, and none words one:
:mod:`cmkd_doctor.wording` says each finding in each place it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the checks, in the order they are shown
CHECKS = ("chance", "pairing", "gamma", "salience", "alignment", "groups", "stability",
          "constant", "negative")
# a failed check of these makes the ranking unreliable: the derived teachers' rows are
# then shown but not read as the hypothesis
UNRELIABLE = ("chance", "pairing", "alignment", "stability")
# the codes reliability reasons have in rank's and distill's JSON
REASON_CODES = {"chance": "at_chance", "pairing": "class_only"}


@dataclass(frozen=True)
class Finding:
    """One check's outcome.

    ``ok`` is False when the check found a problem the user should act on; ``figures``
    holds what the check measured (the ``rank.json`` fields of that check); ``side`` is
    the modality for per-modality checks (chance). ``context`` holds what the wording
    needs beside the figures (the permuted modality, the channel count, options).
    """

    code: str
    ok: bool
    figures: dict[str, Any]
    side: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def unreliable(self) -> bool:
        """This finding makes the ranking unreliable."""
        return not self.ok and self.code in UNRELIABLE

    @property
    def reason_code(self) -> str:
        return REASON_CODES.get(self.code, self.code)


def check_ranking(document: dict[str, Any], salience: np.ndarray | None = None
                  ) -> list[Finding]:
    """Every check's finding from a ``rank.json`` document (or the same fields of a
    ranking being written); ``salience`` adds the all-zero check and the channel count.

    A modality at chance explains everything else that looks wrong: while one is, the
    pairing and gamma findings are not raised (their figures stay)."""
    options = document.get("options") or {}
    context = {"modality": document.get("permuted_modality", options.get("permute", "a")),
               "rows": document.get("permuted_rows"),
               "standardize": options.get("standardize", True),
               "channels": None if salience is None else len(salience)}
    chance = document.get("chance") or {}
    blind = [side for side, found in chance.items() if found.get("at_chance")]
    found = [Finding("chance", not figures.get("at_chance"), figures, side, context)
             for side, figures in chance.items()]
    pairing = document.get("pairing")
    if pairing:
        found.append(Finding("pairing", bool(pairing["paired"] or blind), pairing,
                             context=context))
    gamma = document.get("gamma_estimate")
    if gamma:
        found.append(Finding("gamma", bool(not gamma["little_to_transfer"] or blind), gamma,
                             context=context))
    if salience is not None:
        found.append(Finding("salience", bool(np.any(salience)), {}, context=context))
    agreement = document.get("alignment")
    if agreement:
        found.append(Finding("alignment", bool(agreement.get("reliable", True)), agreement,
                             context=context))
    groups = document.get("groups")
    if groups:
        found.append(Finding("groups", True, groups, context=context))
    stable = document.get("stability") or {}
    if stable.get("stable") is not None:
        found.append(Finding("stability", bool(stable["stable"]), stable, context=context))
    constant = document.get("constant_channels") or []
    found.append(Finding("constant", not constant, {"count": len(constant)}, context=context))
    negative = document.get("negative_salience") or {}
    if negative:
        found.append(Finding("negative", True, negative, context=context))
    return found


def first(findings: list[Finding], code: str) -> Finding | None:
    """The finding of check ``code`` (the first, for per-modality checks)."""
    return next((f for f in findings if f.code == code), None)


def at_chance(findings: list[Finding]) -> list[str]:
    """The modalities that predict the labels no better than chance."""
    return [f.side for f in findings if f.code == "chance" and not f.ok]


def class_only(findings: list[Finding]) -> bool:
    """The rows of a and b share nothing detectable beyond their class (and no modality
    is at chance, which would explain it)."""
    pairing = first(findings, "pairing")
    return pairing is not None and not pairing.ok


def little_to_transfer(findings: list[Finding]) -> bool:
    gamma = first(findings, "gamma")
    return bool(gamma and gamma.figures["little_to_transfer"])


