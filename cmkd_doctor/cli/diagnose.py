"""``cmkd-doctor diagnose``: rank, derive teachers, distil and advise, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars, warn
from cmkd_doctor.cli.options import (
    INPUTS,
    OUTPUT,
    SEEDS_HELP,
    STUDENTS,
    TEACHERS,
    DataDir,
    Download,
    MaxSeeds,
    Mirror,
    Quiet,
    SeedsBudget,
    Tensorboard,
)
from cmkd_doctor.cli.rank_flags import rank_flags
from cmkd_doctor.io.outputs import DEFAULT_RUN
from cmkd_doctor.training import curves
from cmkd_doctor.wording import diagnosis_warnings

# rank flags that also set the training of diagnose's teachers and students
SHARED = ("epochs", "batch_size", "lr", "patience", "chunk_rows", "device", "seed")


@rank_flags
def diagnose_command(
    inputs: Annotated[list[str] | None, typer.Argument(
        metavar="FEATS_A FEATS_B LABELS", help="The three inputs, as for rank.",
        show_default=False)] = None,
    example: Annotated[str | None, typer.Option(
        help="Run on a built-in example instead: a name from 'cmkd-doctor examples list', "
             "or NAME:A,B for views A and B of a multi-view set (scene15:1,2).",
                 rich_help_panel=INPUTS)] = None,
    download: Download = False,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    config: Annotated[Path | None, typer.Option(
        help="YAML file with options for every stage (sections rank:, distill:, gaussian:, "
             "data:, and example: or inputs:); flags given here win.",
                 rich_help_panel=INPUTS)] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help=f"Run directory [default: {DEFAULT_RUN}].",
            rich_help_panel=OUTPUT)] = None,
    ratio: Annotated[str | None, typer.Option(
        help="Nullifying ratio of the derived teachers, a comma list, or auto "
             "[default: 0.5].", rich_help_panel=TEACHERS)] = None,
    sweep: Annotated[bool, typer.Option(help="Distil every teacher at r = 0.1, 0.25, 0.5, "
                                        "0.75 and 0.9 (paper Fig. 5).",
                                            rich_help_panel=TEACHERS)] = False,
    seeds: Annotated[str | None, typer.Option(help=f"{SEEDS_HELP}.", show_default=False,
        rich_help_panel=STUDENTS)
                     ] = None,
    max_seeds: MaxSeeds = None,
    seeds_budget: SeedsBudget = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="One JSON document with the results, the verdict and the advice.",
            rich_help_panel=OUTPUT)
    ] = False,
    tensorboard: Tensorboard = None,
    quiet: Quiet = False,
    rank_given: dict[str, Any] | None = None,
) -> None:
    """The whole doctor: rank, derive modality-general, -specific and random teachers,
    distil each against No-KD and Regular-KD, and say what it means and what to try.

    Every rank option is accepted here with the same name, help and default; --epochs,
    --batch-size, --lr, --patience, --chunk-rows, --device and --seed also set the
    teachers' and students' training.
    """
    from cmkd_doctor.diagnosis.diagnose import diagnose, resolve  # torch: to run, not for --help

    given = rank_given or {}
    overrides = {"rank": given,
                 "distill": {"seeds": seeds, "max_seeds": max_seeds, "seeds_budget": seeds_budget,
                             **{k: given.get(k) for k in SHARED}},
                 "data": {"download": download or None, "mirror": mirror,
                          "data_dir": None if data_dir is None else str(data_dir)}}
    inputs, example, run_dir, settings = resolve(inputs, example, out_dir, config, ratio,
                                                 sweep, overrides)
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        found = diagnose(inputs, example, run_dir, settings, progress)
    for message in diagnosis_warnings(found.rank_document, found.report.verdict):
        warn(message)
    if json_output:
        print_json(found.to_dict())
    elif not quiet:
        render.diagnosis(found, run_dir)
