"""What every command shares: the stderr console, progress bars and JSON output."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from typer.core import TyperCommand, TyperGroup

from cmkd_doctor.cli.options import PANELS
from cmkd_doctor.io.outputs import json_text


def _width() -> int | None:
    """Terminals report their width; for pipes and CI logs use $COLUMNS, else 120."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 40 else 120


# stdout carries the result; everything else goes to stderr. No emoji codes: a file
# named "a.npy:x:" stays as it is.
out = Console(highlight=False, width=_width(), emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

def line(text: str) -> None:
    """One line of plain text on stdout (never read as markup)."""
    out.print(text, markup=False)


TASK_LABELS = {"align": "Step 1: aligning f1 and f2 (Eq. 28)",
               "permute": "Steps 2-8: permuting channels",
               "students": "Students of every teacher (Eq. 1, one stack)",
               "teachers": "Teachers (one stack)",
               "download": "Downloading"}
# where stderr is not a terminal (CI logs, a pipe): a stage says nothing for its first
# PLAIN_AFTER seconds, then a line every PLAIN_EVERY seconds and one when it is done
PLAIN_AFTER, PLAIN_EVERY = 3.0, 10.0
BYTE_TASKS = {"download"}  # counted in bytes, not in steps


class _Counts(ProgressColumn):
    """``done/total`` for steps; size and speed for bytes."""

    def __init__(self):
        super().__init__()
        self.steps = MofNCompleteColumn()
        self.size, self.speed = DownloadColumn(), TransferSpeedColumn()

    def render(self, task):
        if not task.fields.get("bytes"):
            return self.steps.render(task)
        return f"{self.size.render(task)} {self.speed.render(task)}"


def _plain_lines() -> Any:
    """A ``progress(task, done, total)`` callback writing plain lines on stderr: long
    work shows life in a log without a terminal's bars (see :data:`PLAIN_AFTER`)."""
    import time

    started: dict[str, float] = {}
    said: dict[str, tuple[float, int]] = {}  # when each stage last spoke, at what count

    def amount(task: str, done: int, total: int) -> str:
        if task in BYTE_TASKS:
            return f"{done / 2**20:.1f} of {total / 2**20:.1f} MiB"
        return f"{done}/{total}"

    def report(task: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = started.setdefault(task, now)
        label = TASK_LABELS.get(task, task)
        if done >= total:  # finished: a stage that spoke says so, and may start again
            if task in said:
                err.print(f"{label}: done ({now - start:.0f} s)", markup=False)
            started.pop(task, None)
            said.pop(task, None)
            return
        last, count = said.get(task, (None, 0))
        if done <= count:  # nothing moved (a stalled transfer): nothing to say
            return
        if (now - start >= PLAIN_AFTER) if last is None else (now - last >= PLAIN_EVERY):
            err.print(f"{label}: {amount(task, done, total)} ({now - start:.0f} s)",
                      markup=False)
            said[task] = (now, done)

    return report


@contextmanager
def progress_bars(quiet: bool) -> Iterator[Any]:
    """A ``progress(task, done, total)`` callback drawing rich bars on stderr, or plain
    lines when stderr is not a terminal (:func:`_plain_lines`). Off with ``--quiet``."""
    if quiet:
        yield lambda task, done, total: None
        return
    if not err.is_terminal:
        yield _plain_lines()
        return
    bars = Progress(TextColumn("{task.description}"), BarColumn(), _Counts(),
                    TimeElapsedColumn(), console=err, transient=True)
    tasks: dict[str, Any] = {}

    def report(task: str, done: int, total: int) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(TASK_LABELS.get(task, task), total=total,
                                        bytes=task in BYTE_TASKS)
        bars.update(tasks[task], completed=done, total=total)

    with bars:
        yield report


_BARS = " ▁▂▃▄▅▆▇█"


def spark(values, low: float | None = None) -> str:
    """A one-line bar plot; bars span ``low`` (default: the minimum) to the maximum."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    low = v.min() if low is None else low
    span = v.max() - low
    scaled = (v - low) / span if span > 0 else np.zeros_like(v)
    return "".join(_BARS[int(round(x * (len(_BARS) - 1)))] for x in scaled)


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json_text(document))
    sys.stdout.flush()


def silence() -> None:
    """Print nothing from this process (a torchrun rank other than 0)."""
    out.quiet = err.quiet = True
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def warn(message: str) -> None:
    err.print(f"warning: {message}", markup=False)


def show_help_without_command(ctx: typer.Context) -> None:
    """A command group called bare prints its help and exits 0."""
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        out.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit()


def summary(command: Any) -> str:
    """A command's one-line summary: its ``short_help``, else the first paragraph of its
    help, whole (click's default cuts at the first full stop, so "Eq. 27" or "Sec. 3"
    ended it)."""
    if command.short_help:
        return command.short_help
    return " ".join((command.help or "").strip().split("\n\n")[0].split())


class WholeSummaries(TyperGroup):
    """A command group whose command list shows each summary whole."""

    def format_commands(self, ctx, formatter) -> None:
        rows = [(name, summary(self.get_command(ctx, name)))
                for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


_TYPE_METAVAR = re.compile(r" <[^<>]+>$")  # typer's "<str>", "<list[str]>", "<path>"


class PanelCommand(TyperCommand):
    """A command whose help reads as a person writes the command: arguments first in the
    usage line, each option's value named after the option (``--seeds SEEDS``, not
    ``--seeds <str>``), and the options grouped into panels (``rich_help_panel`` of
    each option: inputs, ranking, teachers, students, output), in the order their
    first option is declared."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or param.name.upper()
            if param.nargs == -1 and " " not in name:  # FEATS_A FEATS_B LABELS: named
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return [*pieces, self.options_metavar] if self.options_metavar else pieces

    def format_options(self, ctx, formatter) -> None:
        arguments, panels = [], {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            names, text = record
            if param.param_type_name == "argument":
                arguments.append((_TYPE_METAVAR.sub("", names), text))
                continue
            long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            value = long.lstrip("-").replace("-", "_").upper()
            names = _TYPE_METAVAR.sub(f" {value}", names)
            panel = getattr(param, "rich_help_panel", None) or "Options"
            panels.setdefault(panel, []).append((names, text))
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = [*PANELS, "Options"]
        for panel, rows in sorted(panels.items(), key=lambda item: order.index(item[0])
                                  if item[0] in order else len(order)):
            with formatter.section(panel):
                formatter.write_dl(rows)
