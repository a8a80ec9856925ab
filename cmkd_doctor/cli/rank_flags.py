"""Algorithm 1's options as command-line flags, declared once for ``rank`` and
``diagnose``.

Every flag is a :class:`~cmkd_doctor.ranking.options.RankOptions` field of the same name;
its default is that field's (shown in the help, never passed: a flag left out is
``None``), so a ``--protocol`` fills what was not given, and both commands accept,
describe and default every option the same way (:func:`rank_flags` adds them to a
command's signature). A YAML config's ``rank:`` section takes the same names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from cmkd_doctor.cli.options import INPUTS, RANKING, TRAINING
from cmkd_doctor.ranking.options import FLAGS, Flag, RankOptions

PANELS = {"training": TRAINING, "inputs": INPUTS, "ranking": RANKING}


_DEFAULTS = {f.name: f.default for f in fields(RankOptions)}


def flag_help(flag: Flag) -> str:
    """A flag's help with its default, as both commands show it."""
    default = _DEFAULTS[flag.name]
    shown = flag.shown_default or (
        ",".join(map(str, default)) if isinstance(default, tuple) else str(default))
    return f"{flag.help} [default: {shown}]"


def _parameter(flag: Flag) -> inspect.Parameter:
    option = typer.Option(*flag.decls, help=flag_help(flag), show_default=False,
                          rich_help_panel=PANELS[flag.group])
    return inspect.Parameter(flag.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation=Annotated[flag.kind | None, option])


def rank_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add every flag of :data:`FLAGS` to ``command``'s options (after its own, before
    ``--json``); ``command`` receives the ones given as one dict, ``rank_given``."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "rank_given"]
    tail = [p for p in own if p.name in ("json_output", "tensorboard", "quiet")]
    head = [p for p in own if p not in tail]
    added = [_parameter(flag) for flag in FLAGS]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {f.name: kwargs.pop(f.name) for f in FLAGS}
        given = {k: str(v) if isinstance(v, Path) else v for k, v in given.items()
                 if v is not None}
        return command(*args, rank_given=given, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*head, *added, *tail])
    wrapper.__annotations__ = {p.name: p.annotation for p in [*head, *added, *tail]}
    del wrapper.__wrapped__  # typer reads the signature above, not the command's
    return wrapper
