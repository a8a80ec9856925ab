"""``cmkd-doctor rank``: Algorithm 1 on the user's arrays."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars, warn
from cmkd_doctor.cli.options import DEFAULT_RUN, OUTPUT, OutDir, Quiet, Tensorboard
from cmkd_doctor.cli.rank_flags import rank_flags
from cmkd_doctor.ranking.options import RankOptions
from cmkd_doctor.training import curves


@rank_flags
def rank(
    feats_a: Annotated[str, typer.Argument(
        metavar="FEATS_A",
        help="Features of modality a (the teacher's), (n, d_a): .npy, .npz or "
             ".safetensors; FILE:KEY picks an array.")],
    feats_b: Annotated[str, typer.Argument(
        metavar="FEATS_B",
        help="Features of modality b (the student's), (n, d_b), rows paired with FEATS_A.")],
    labels: Annotated[str, typer.Argument(
        metavar="LABELS",
        help="Labels: (n,) class ids (integers or strings) or (n, K) multi-hot for "
             "multi-label tasks.")],
    out_dir: OutDir = DEFAULT_RUN,
    json_output: Annotated[bool, typer.Option("--json", help="Print rank.json plus the "
                                              "salience as one JSON document on stdout.",
                                                  rich_help_panel=OUTPUT)
                           ] = False,
    tensorboard: Tensorboard = None,
    quiet: Quiet = False,
    rank_given: dict[str, Any] | None = None,
) -> None:
    """Rank the channels of FEATS_A by modality-general decisive salience (Algorithm 1).

    Trains two networks to agree (Eq. 28), permutes each channel M times, and writes
    salience.npy (max 1) with rank.json, the split and both networks into --out.
    """
    from cmkd_doctor.io.rundir import rank_files  # torch: imported to run, not for --help

    options = RankOptions.from_given(rank_given or {})
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        result, document = rank_files(feats_a, feats_b, labels, out_dir, options, progress)
    for message in document["warnings"]:
        warn(message)
    if json_output:
        print_json({**document, "salience": result.salience.tolist()})
    elif not quiet:
        render.rank_summary(document, result.salience, out_dir)
        render.advice(document["advice"])
