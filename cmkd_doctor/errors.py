"""The one exception family of cmkd-doctor and the exit codes it maps to.

Library code raises a subclass of :class:`CmkdError` with a message a user can act on;
the CLI catches it once, prints ``error: <message>`` on stderr and exits with
``exit_code``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_EXPECTATION = 3


class CmkdError(Exception):
    """Base class of every error cmkd-doctor reports to a user."""

    exit_code = EXIT_INTERNAL


class InputError(CmkdError):
    """A file or an option is unusable; the message names which and why. ``option`` is
    the flag a bad option value's message begins with (:func:`option_error`)."""

    exit_code = EXIT_BAD_INPUT
    option: str | None = None


class DownloadError(InputError):
    """An example's file could not be fetched whole (an unreachable server, a cut
    transfer, a file that is not the published one); nothing of it was kept."""


class ExpectationFailed(CmkdError):
    """A ``--expect`` comparison did not hold (a CI gate, not a crash). ``comparison``
    holds what was compared when the library ran the whole command (it was recorded)."""

    exit_code = EXIT_EXPECTATION
    comparison: Any = None


def option_error(name: str, expected: str, got: Any) -> InputError:
    """The one template for a bad option value.

    ``name`` is an option (``ratio`` becomes ``--ratio``) or, with a space or a capital,
    a phrase used as it is (``examples reproduce EXPERIMENT``).

    >>> str(option_error("ratio", "a number in (0, 1)", 1.5))
    '--ratio must be a number in (0, 1); got 1.5'
    """
    flag = name if (" " in name or name.isupper()) else "--" + name.replace("_", "-")
    error = InputError(f"{flag} must be {expected}; got {shown(got)}")
    error.option = flag  # so a config file's reader can name its own key instead
    return error


def shown(value: Any, limit: int = 80) -> str:
    """A user's value as an error message shows it: ``repr`` for text, cut to ``limit``
    characters (a value from a file can be long; a message stays one short line).

    >>> shown("x" * 100, limit=12)
    "'xxxxxxxxxxx... (102 characters)"
    """
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def unknown_name(name: str, valid: Iterable[str], got: Any) -> InputError:
    """The one message for a name that is not in a registry: it lists the valid ones.

    >>> str(unknown_name("dist", ["mse", "l1"], "l2"))
    "--dist must be one of mse, l1; got 'l2'"
    """
    return option_error(name, f"one of {', '.join(valid)}", got)
