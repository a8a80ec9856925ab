"""``cmkd-doctor report``: the run directory as a page people would rather look at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import err, out
from cmkd_doctor.cli.options import DEFAULT_RUN
from cmkd_doctor.report import render as render_report


def report_command(
    run_dir: Annotated[Path, typer.Option("--run", help="Run directory to report on.")
                       ] = DEFAULT_RUN,
    fmt: Annotated[str, typer.Option(
        "--format", help="text (terminal), md (plots as PNG files beside it), html (one "
                         "self-contained file), or json.")] = "text",
    out_file: Annotated[Path | None, typer.Option(
        "--out", "-o", help="File to write [default: stdout for text, md and json; html "
                            "needs it].")] = None,
) -> None:
    """Inputs, aligned networks, salience, teachers, the student comparison with its
    verdict, the ratio sweep and, for generated data, the truth."""
    found = render_report(run_dir, fmt, out_file)
    for line in found.skipped:
        err.print(f"note: plot skipped: {line}", markup=False)
    if found.text is None:
        render.report_text(found.doc)
    elif found.written is None:
        out.file.write(found.text)
    else:
        err.print(f"wrote {found.written}", markup=False)
