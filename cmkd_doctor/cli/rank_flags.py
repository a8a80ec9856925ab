"""Algorithm 1's options as command-line flags, declared once for ``rank`` and
``diagnose``.

Every flag is a :class:`~cmkd_doctor.rank_options.RankOptions` field of the same name;
its default is that field's (shown in the help, never passed: a flag left out is
``None``), so a ``--protocol`` fills what was not given, and both commands accept,
describe and default every option the same way (:func:`rank_flags` adds them to a
command's signature). A YAML config's ``rank:`` section takes the same names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from cmkd_doctor.choices import DISTANCES, NORMALIZATIONS
from cmkd_doctor.cli.options import INPUTS, RANKING, TRAINING
from cmkd_doctor.rank_options import (
    ESTIMATORS,
    PERMUTATIONS,
    PERMUTED_ROWS,
    RANK_PROTOCOLS,
    SIDES,
    RankOptions,
)


@dataclass(frozen=True)
class Flag:
    """One of rank's options on the command line: its type there, its flag names and
    its help (the default is appended from :class:`RankOptions`)."""

    name: str
    kind: Any
    help: str
    decls: tuple[str, ...] = ()
    shown_default: str | None = None  # how the default reads, when not the field's value

    @property
    def panel(self) -> str:
        """The --help panel it is listed in."""
        return (TRAINING if self.name in _TRAINING else INPUTS if self.name in _INPUTS
                else RANKING)


def _declared() -> tuple[Flag, ...]:
    return (
        Flag("repeats", int, "Permutations per channel (Algorithm 1, M).",
             ("--repeats", "-M")),
        Flag("hidden", str, "Hidden widths of the aligned networks: 0 for a linear model, H "
             "for Linear-ReLU-Linear, a comma list for deeper MLPs.", shown_default="256"),
        Flag("epochs", int, "Maximum training epochs for step 1.",
             shown_default="about 4000 optimiser steps, 20 to 300 epochs"),
        Flag("batch_size", int, "Minibatch size of step 1."),
        Flag("lr", float, "Learning rate of step 1."),
        Flag("patience", int, "Stop step 1 after this many epochs without improvement of "
             "the held-out Eq. 28 loss, keeping the best epoch; 0 trains all epochs."),
        Flag("dist", str, f"Dist of Eq. 28: {DISTANCES.describe()}."),
        Flag("normalize", str, f"Step 9: {NORMALIZATIONS.describe()}."),
        Flag("permute", str, f"Modality whose channels are ranked: {SIDES.describe()}."),
        Flag("permute_on", str, f"Rows permuted in steps 2-8: {PERMUTED_ROWS.describe()}."),
        Flag("test_split", float, "Fraction of rows held out, stratified by class and "
             "seeded; saved as split.npz for later commands."),
        Flag("estimator", str, f"Steps 2-8: {ESTIMATORS.describe()}."),
        Flag("permutation", str, f"Step 5: {PERMUTATIONS.describe()}."),
        Flag("split", Path, "A .npz with 'train' and 'test' row indices to use instead of "
             "--test-split (e.g. a dataset's own split).", shown_default="none"),
        Flag("groups", str, "Permute correlated channels together: none (each alone, "
             "Algorithm 1 as written), auto (channels whose |Spearman| on the fit rows "
             "exceeds --group-threshold), or a .npy of one group id per channel."),
        Flag("group_threshold", float, "Correlation above which --groups auto joins two "
             "channels."),
        Flag("chunk_rows", int, "Rows read at a time from memory-mapped .npy inputs.",
             shown_default="all rows on the device when they fit (1 GiB on the CPU, half "
                           "the free GPU memory), else chunk sets of about 128 MiB"),
        Flag("restarts", int, "Train the aligned pair this many times (other "
             "initialisation, minibatches and permutations; the same split) and average "
             "the salience; 2 or more also measure the ranking's stability.",
             shown_default="1 for rank; for diagnose 3 when one ranking costs at most 3 "
                           "TFLOP (about 30 s on 2 CPU cores), else 1"),
        Flag("standardize", bool, "Standardise every channel with its fit-row mean and "
             "standard deviation (channels constant on the fit rows are ignored), so units "
             "do not matter; --no-standardize feeds raw features.",
             ("--standardize/--no-standardize",), shown_default="on"),
        Flag("protocol", str, "Defaults for every rank option not given: "
             f"{RANK_PROTOCOLS.describe()}."),
        Flag("device", str, "auto (CUDA when present), cpu, cuda or cuda:N."),
        Flag("seed", int, "Seed of the split, initialisation, shuffling and permutations."),
    )


# the flags that set training (diagnose's teachers and students too) and the data split
_TRAINING = ("hidden", "epochs", "batch_size", "lr", "patience", "chunk_rows", "device", "seed")
_INPUTS = ("test_split", "split")
FLAGS: tuple[Flag, ...] = _declared()
_DEFAULTS = {f.name: f.default for f in fields(RankOptions)}


def flag_help(flag: Flag) -> str:
    """A flag's help with its default, as both commands show it."""
    default = _DEFAULTS[flag.name]
    shown = flag.shown_default or (
        ",".join(map(str, default)) if isinstance(default, tuple) else str(default))
    return f"{flag.help} [default: {shown}]"


def _parameter(flag: Flag) -> inspect.Parameter:
    option = typer.Option(*flag.decls, help=flag_help(flag), show_default=False,
                          rich_help_panel=flag.panel)
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
