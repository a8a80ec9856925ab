"""``cmkd-doctor diagnose``: rank, derive teachers, distil and advise, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor import curves
from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars, warn
from cmkd_doctor.cli.options import Quiet, Tensorboard
from cmkd_doctor.diagnose import diagnose, resolve
from cmkd_doctor.outputs import DEFAULT_RUN


def diagnose_command(
    inputs: Annotated[list[str] | None, typer.Argument(
        metavar="FEATS_A FEATS_B LABELS", help="The three inputs, as for rank.",
        show_default=False)] = None,
    example: Annotated[str | None, typer.Option(
        help="Run on a built-in example instead ('cmkd-doctor examples list').")] = None,
    config: Annotated[Path | None, typer.Option(
        help="YAML file with options for every stage (sections rank:, distill:, gaussian:, "
             "and example: or inputs:); flags given here win.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help=f"Run directory [default: {DEFAULT_RUN}].")] = None,
    ratio: Annotated[str | None, typer.Option(
        help="Nullifying ratio of the derived teachers, a comma list, or auto "
             "[default: 0.5].")] = None,
    sweep: Annotated[bool, typer.Option(help="Distil every teacher at r = 0.1, 0.25, 0.5, "
                                        "0.75 and 0.9 (paper Fig. 5).")] = False,
    hidden: Annotated[str | None, typer.Option(
        help="Network widths for ranking and students [default: 256].")] = None,
    repeats: Annotated[int | None, typer.Option(
        "--repeats", "-M", help="Permutations per channel [default: 10].")] = None,
    seeds: Annotated[int | None, typer.Option(
        help="Student seeds per teacher [default: 5].")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Most training epochs [default: auto].")] = None,
    chunk_rows: Annotated[int | None, typer.Option(
        help="Rows read at a time from memory-mapped .npy inputs, for ranking, teachers "
             "and students [default: all when they fit].")] = None,
    restarts: Annotated[int | None, typer.Option(
        help="Aligned pairs trained to average the salience and measure its stability "
             "[default: 3 when one ranking takes at most a minute, else 1].")] = None,
    standardize: Annotated[bool | None, typer.Option(
        "--standardize/--no-standardize",
        help="Standardise every channel with its fit-row statistics [default: on].")
    ] = None,
    device: Annotated[str | None, typer.Option(
        help="auto, cpu, cuda or cuda:N [default: auto].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every stage [default: 0].")] = None,
    split: Annotated[Path | None, typer.Option(
        help="A .npz with 'train' and 'test' row indices (e.g. a dataset's own split) "
             "instead of a random one.")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="One JSON document with the results, the verdict and the advice.")
    ] = False,
    tensorboard: Tensorboard = None,
    quiet: Quiet = False,
) -> None:
    """The whole doctor: rank, derive modality-general, -specific and random teachers,
    distil each against No-KD and Regular-KD, and say what it means and what to try.
    """
    overrides = {
        "rank": {"hidden": hidden, "repeats": repeats, "epochs": epochs, "device": device,
                 "chunk_rows": chunk_rows, "seed": seed, "standardize": standardize,
                 "restarts": restarts,
                 "split": None if split is None else str(split)},
        "distill": {"seeds": seeds, "epochs": epochs, "chunk_rows": chunk_rows,
                    "device": device, "seed": seed},
    }
    inputs, example, run_dir, settings = resolve(inputs, example, out_dir, config, ratio,
                                                 sweep, overrides)
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        found = diagnose(inputs, example, run_dir, settings, progress)
    for message in found.rank.warnings:
        warn(message)
    if json_output:
        print_json(found.to_dict())
    elif not quiet:
        render.diagnosis(found, run_dir)
