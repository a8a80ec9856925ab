"""``cmkd-doctor report``: the run directory as a page people would rather look at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import err, out
from cmkd_doctor.io.outputs import DEFAULT_RUN


def report_command(
    runs: Annotated[list[Path] | None, typer.Argument(
        metavar="RUN", help="With --compare: the run directories to put side by side.",
        show_default=False)] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run", help=f"Run directory to report on [default: {DEFAULT_RUN}].",
        show_default=False)] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Put several runs in one report (a -> b against b -> a, two "
                          "layers, two ratios): a summary row per run, every run's "
                          "students on one axis, then each diagnosis.")] = False,
    fmt: Annotated[str, typer.Option(
        "--format", help="text (terminal), md (plots as PNG files beside it), html (one "
                         "self-contained file), or json.")] = "text",
    out_file: Annotated[Path | None, typer.Option(
        "--out", "-o", help="File to write [default: stdout for text, md and json; html, "
                            "and md with --compare, need it].")] = None,
) -> None:
    """The diagnosis first (verdict, the teacher to use, the gain, the warnings, the
    students plot), then inputs, aligned networks, salience, teachers, students, the
    ratio sweep and, for generated data, the truth. With --compare RUN RUN ...: several
    runs side by side."""
    from cmkd_doctor.report.layout import report  # torch: to run, not for --help

    found = report(run_dir, fmt, out_file, compare_runs=[] if compare else None, runs=runs)
    for line in found.skipped:
        err.print(f"note: plot skipped: {line}", markup=False)
    if found.text is None:
        (render.compare_text if compare else render.report_text)(found.doc)
    elif found.written is None:
        out.file.write(found.text)
    else:
        err.print(f"wrote {found.written}", markup=False)
