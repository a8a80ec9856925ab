"""The one exception family of cmkd-doctor and the exit codes it maps to.

Library code raises a subclass of :class:`CmkdError` with a message a user can act on;
the CLI catches it once, prints ``error: <message>`` on stderr and exits with
``exit_code``.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2


class CmkdError(Exception):
    """Base class of every error cmkd-doctor reports to a user."""

    exit_code = EXIT_INTERNAL


class InputError(CmkdError):
    """A file or an option is unusable; the message names which and why."""

    exit_code = EXIT_BAD_INPUT


EXIT_EXPECTATION = 3


class ExpectationFailed(CmkdError):
    """A ``--expect`` comparison did not hold (a CI gate, not a crash)."""

    exit_code = EXIT_EXPECTATION


def option_error(name: str, expected: str, got: Any) -> InputError:
    """The one template for a bad option value.

    >>> str(option_error("ratio", "a number in (0, 1)", 1.5))
    '--ratio must be a number in (0, 1); got 1.5'
    """
    flag = "--" + name.replace("_", "-")
    return InputError(f"{flag} must be {expected}; got {got!r}" if isinstance(got, str)
                      else f"{flag} must be {expected}; got {got}")
