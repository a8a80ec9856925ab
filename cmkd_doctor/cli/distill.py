"""``cmkd-doctor distill``: students taught by each teacher, compared as in Table 4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from cmkd_doctor.cli._common import out, print_json, progress_bars
from cmkd_doctor.cli.train_options import train_options
from cmkd_doctor.distill import (
    TEACHER_CHOICES,
    DistillOptions,
    DistillReport,
    check_expectation,
    distill,
    record,
)
from cmkd_doctor.rundir import DEFAULT_RUN
from cmkd_doctor.teachers import FILLS


def distill_command(
    run_dir: Path = typer.Option(DEFAULT_RUN, "--run", help="Run directory written by rank."),
    teacher: str = typer.Option("all", help="Teachers, comma-separated: "
                                + ", ".join(TEACHER_CHOICES) + " (all: every mode), or a "
                                ".safetensors/.onnx checkpoint used as is. No-KD and "
                                "Regular-KD rows are always included."),
    ratio: str = typer.Option("0.5", help="Nullifying ratio r in (0, 1); a comma list runs a "
                              "sweep; auto searches for the sweet spot (coarse grid, then a "
                              "refinement)."),
    source: str = typer.Option("trained", "--from", help="What derived teachers mask: trained, "
                               "aligned (rank's f1) or a checkpoint path."),
    fill: str = typer.Option("mean", help="Fill of nullified channels: " + ", ".join(FILLS)
                             + "."),
    refit: bool = typer.Option(False, help="Retrain derived teachers on their masked "
                               "features."),
    rho: float = typer.Option(0.5, help="Weight of the task loss in Eq. 1 (1 - rho weighs KD)."),
    temperature: float = typer.Option(1.0, help="KD temperature T (the paper uses 1)."),
    seeds: int = typer.Option(5, help="Student seeds per teacher (trained as one batch)."),
    hidden: str = typer.Option(None, help="Student and trained-teacher widths [default: the "
                               "rank run's]."),
    epochs: int = train_options.epochs,
    batch_size: int = train_options.batch_size,
    lr: float = train_options.lr,
    patience: int = train_options.patience,
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, help="Seed of student seeds, random masks and teachers."),
    expect: str = typer.Option(None, help="CI gate, e.g. 'general>regular' or "
                               "'general@0.5>=random@0.5': exit 3 when it fails on the means."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document with the "
                                     "results and the verdict."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table."),
) -> None:
    """Distil students from No-KD, regular and derived teachers and compare them.

    Prints the paper's Table 4 shape with a verdict, and accumulates results in
    RUN/distill.json. Exit 3 when --expect fails.
    """
    train = train_options.build(hidden, epochs, batch_size, lr, patience)
    options = DistillOptions(teachers=teacher, ratios=ratio, source=source, fill=fill,
                             refit=refit, rho=rho, temperature=temperature, seeds=seeds,
                             train=train, device=device, seed=seed)
    with progress_bars(quiet or json_output) as progress:
        report = distill(run_dir, options, progress, expect=expect)
    record(report)
    if json_output:
        print_json(report.to_dict())
    elif not quiet:
        print_table(report)
    if expect:
        check_expectation(report, expect)


def _signed(value: float) -> str:
    return f"{value + 0.0:+.2f}" if abs(value) >= 0.005 else "+0.00"


def print_table(report: DistillReport) -> None:
    """The comparison in the shape of the paper's Table 4, then the verdict."""
    metric = report.metric
    seeds = len(report.rows[0].student_runs)
    table = Table(title=f"Crossmodal KD on {report.run} ({metric} %, test rows, {seeds} seeds)",
                  title_justify="left")
    for name, justify in (("teacher", "left"), ("teacher " + metric, "right"),
                          ("student " + metric, "right"), ("vs No-KD", "right"),
                          ("vs Regular-KD", "right")):
        table.add_column(name, justify=justify)
    extra = [name for name in report.rows[0].student_metrics if name != metric]
    for name in extra:  # multi-label: macro F1 and mAP beside the headline micro F1
        table.add_column("student " + name, justify="right")
    base = report.baselines
    for row in report.rows:
        teacher_metric = "-" if row.teacher_metric is None else f"{row.teacher_metric:.2f}"
        d_none = row.student_mean - base["none"].student_mean
        d_reg = row.student_mean - base["regular"].student_mean
        table.add_row(row.label, teacher_metric,
                      f"{row.student_mean:.2f} ± {row.student_std:.2f}",
                      "" if row.teacher == "none" else _signed(d_none),
                      "" if row.teacher in ("none", "regular") else _signed(d_reg),
                      *(f"{np.mean(row.student_metrics[name]):.2f}" for name in extra))
    out.print(table)
    if report.search:
        s = report.search
        out.print(f"ratio search: {s['distillations']} general-teacher distillations (coarse "
                  f"{', '.join(f'{r:g}' for r in s['coarse'])}; refined "
                  f"{', '.join(f'{r:g}' for r in s['refined']) or 'nothing new'}) where a full "
                  f"0.05 grid takes {s['full_grid']}; sweet spot r = {s['best_ratio']:g}",
                  markup=False)
    out.print("verdict: " + report.verdict["text"], markup=False)
