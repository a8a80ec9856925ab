"""Checking option values, one template for every command (see :func:`option_error`).

Every ``*Options.checked()`` method is built from these, so ``--epochs 0``, ``--lr inf``
and ``--seeds true`` get the same kind of message wherever they are given.
"""

from __future__ import annotations

import math
from typing import Any

from cmkd_doctor.errors import option_error

#: more seeds (student seeds, reproduction runs) than this add only time: at 1000 the
#: standard error of the mean is already 3% of the seed-to-seed spread
MAX_SEEDS = 1000
SEEDS_WHY = "at 1000 the mean's standard error is already 3% of the seed-to-seed spread"


def whole(name: str, value: Any, minimum: int = 0, *, optional: bool = False,
          maximum: int | None = None, why: str = "") -> int | None:
    """``value`` when it is a whole number >= ``minimum`` (and <= ``maximum``, with
    ``why`` said when it is not); ``None`` allowed if optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise option_error(name, f"a whole number >= {minimum}", value)
    if maximum is not None and value > maximum:
        raise option_error(name, f"a whole number in {minimum}..{maximum}"
                           + (f" ({why})" if why else ""), value)
    return value


def number(name: str, value: Any, expected: str, *, low: float | None = None,
           high: float | None = None, open_low: bool = False,
           open_high: bool = False) -> float:
    """``value`` as a float when it is finite and inside the bounds; ``expected`` says
    what the bounds are in words (``a number in (0, 1)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise option_error(name, expected, value)
    v = float(value)
    bad = (not math.isfinite(v)
           or (low is not None and (v <= low if open_low else v < low))
           or (high is not None and (v >= high if open_high else v > high)))
    if bad:
        raise option_error(name, expected, value)
    return v


def parse_list(text: str | float | list | tuple, option: str, cast: type) -> tuple:
    """``"a,b"`` -> ``(a, b)`` for comma-list options; lists and tuples pass through."""
    if isinstance(text, (list, tuple)):
        return tuple(text)
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        return tuple(cast(p) for p in parts)
    except ValueError:
        raise option_error(option, f"a comma list of {cast.__name__} values", text) from None


def parse_hidden(text: str | int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``"0"`` -> ``()``; ``"256"`` -> ``(256,)``; ``"512,256"`` -> ``(512, 256)``."""
    if isinstance(text, int):
        sizes = [text]
    elif isinstance(text, (tuple, list)):
        sizes = list(text)
        if any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise option_error("hidden", "0 or a comma list of positive layer widths", text)
    else:
        try:  # an empty part ("8,,8", "8,") is a typo, not a layer to drop
            sizes = [int(part) for part in str(text).split(",")]
        except ValueError:
            raise option_error("hidden", "0 or a comma list of positive layer widths",
                               text) from None
    if sizes in ([0], []) and not isinstance(text, str):
        return ()
    if sizes == [0]:
        return ()
    if not sizes or any(s <= 0 for s in sizes):
        raise option_error("hidden", "0 or a comma list of positive layer widths", text)
    return tuple(sizes)
