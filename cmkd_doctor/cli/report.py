"""``cmkd-doctor report``: the run directory as a page people would rather look at."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markdown import Markdown

from cmkd_doctor.cli._common import err, out, spark
from cmkd_doctor.errors import InputError
from cmkd_doctor.outputs import check_out_dir, write_bytes, write_text
from cmkd_doctor.report import collect, plots, to_html, to_markdown
from cmkd_doctor.rundir import DEFAULT_RUN

FORMATS = ("text", "md", "html", "json")


def report_command(
    run_dir: Path = typer.Option(DEFAULT_RUN, "--run", help="Run directory to report on."),
    fmt: str = typer.Option("text", "--format", help="text (terminal), md (plots as PNG "
                            "files beside it), html (one self-contained file), or json."),
    out_file: Path = typer.Option(None, "--out", "-o", help="File to write [default: stdout "
                                  "for text, md and json; html needs it]."),
) -> None:
    """Inputs, aligned networks, salience, teachers, the student comparison with its
    verdict, the ratio sweep and, for generated data, the truth."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "html" and out_file is None:
        raise InputError("--format html writes a file: give --out report.html")
    if out_file is not None:
        check_out_dir(out_file.parent)
    doc = collect(run_dir)
    if fmt == "json":
        text = json.dumps(doc, indent=2) + "\n"
    elif fmt == "text":
        _print_text(doc)
        return
    else:
        pngs, skipped = plots(doc)
        if fmt == "html":
            text = to_html(doc, pngs, skipped)
        else:
            folder = out_file.parent if out_file else Path(run_dir) / "report"
            stem = out_file.stem if out_file else "report"
            images = {}
            for name, data in pngs.items():
                write_bytes(folder / f"{stem}_{name}.png", data)
                images[name] = (f"{stem}_{name}.png" if out_file
                                else str(folder / f"{stem}_{name}.png"))
            text = to_markdown(doc, images, skipped)
        for line in skipped:
            err.print(f"note: plot skipped: {line}", markup=False)
    if out_file is None:
        out.file.write(text)
    else:
        write_text(out_file, text)
        err.print(f"wrote {out_file}", markup=False)


def _print_text(doc: dict) -> None:
    """The Markdown content rendered by rich, with small text plots."""
    out.print(Markdown(to_markdown(doc, {}, [])))
    salience = sorted(doc["salience"]["values"], reverse=True)
    out.print(f"salience, sorted: |{spark(salience)}|  (1 -> {salience[-1]:.2f})",
              markup=False)
    if doc["sweep"]:
        for name, points in doc["sweep"]["series"].items():
            ratios = ", ".join(f"{p['ratio']:g}" for p in points)
            out.print(f"sweep {name:8s} |{spark([p['mean'] for p in points])}|  r = {ratios}",
                      markup=False)
