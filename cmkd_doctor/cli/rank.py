"""``cmkd-doctor rank``: Algorithm 1 on the user's arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cmkd_doctor import curves
from cmkd_doctor.cli import render
from cmkd_doctor.cli._common import print_json, progress_bars, warn
from cmkd_doctor.cli.options import (
    DEFAULT_RUN,
    BatchSize,
    ChunkRows,
    Device,
    Lr,
    OutDir,
    Quiet,
    Tensorboard,
)
from cmkd_doctor.losses import DISTANCES
from cmkd_doctor.ranking import (
    ESTIMATORS,
    NORMALIZATIONS,
    PERMUTATIONS,
    RANK_PROTOCOLS,
    RankOptions,
)
from cmkd_doctor.rundir import rank_files


def rank(
    ctx: typer.Context,
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
    repeats: Annotated[int, typer.Option("--repeats", "-M", help="Permutations per channel "
                                         "(Algorithm 1, M).")] = 10,
    hidden: Annotated[str, typer.Option(help="Hidden widths of both networks: 0 for a linear "
                                        "model, H for Linear-ReLU-Linear, a comma list for "
                                        "deeper MLPs.")] = "256",
    epochs: Annotated[int | None, typer.Option(help="Maximum training epochs for step 1 "
                                               "[default: about 4000 optimiser steps].")
                      ] = None,
    batch_size: BatchSize = 256,
    lr: Lr = 1e-3,
    patience: Annotated[int, typer.Option(help="Stop step 1 after this many epochs without "
                                          "improvement of the held-out Eq. 28 loss, keeping "
                                          "the best epoch; 0 trains all epochs.")] = 10,
    dist: Annotated[str, typer.Option(help="Dist of Eq. 28: " + DISTANCES.describe() + ".")
                    ] = "mse",
    normalize: Annotated[str, typer.Option(help="Step 9: " + NORMALIZATIONS.describe() + ".")
                         ] = "max",
    permute: Annotated[str, typer.Option(help="Modality whose channels are ranked: a, or b "
                                         "(paper note 3).")] = "a",
    permute_on: Annotated[str, typer.Option(help="Rows permuted in steps 2-8: test "
                                            "(held-out, robust to memorisation) or train.")
                          ] = "test",
    test_split: Annotated[float, typer.Option(help="Fraction of rows held out, stratified by "
                                              "class and seeded; saved as split.npz for "
                                              "later commands.")] = 0.2,
    estimator: Annotated[str, typer.Option(help=ESTIMATORS.describe() + ".")] = "sampled",
    permutation: Annotated[str, typer.Option(help="Step 5: " + PERMUTATIONS.describe() + ".")
                           ] = "shared",
    split: Annotated[Path | None, typer.Option(help="A .npz with 'train' and 'test' row "
                                               "indices to use instead of --test-split "
                                               "(e.g. a dataset's own split).")] = None,
    groups: Annotated[str, typer.Option(
        help="Permute correlated channels together: none (each alone, Algorithm 1 as "
             "written), auto (channels whose |Spearman| on the fit rows exceeds "
             "--group-threshold), or a .npy of one group id per channel.")] = "none",
    group_threshold: Annotated[float, typer.Option(
        help="Correlation above which --groups auto joins two channels.")] = 0.8,
    chunk_rows: ChunkRows = None,
    restarts: Annotated[int, typer.Option(
        help="Train the aligned pair this many times (other initialisation, minibatches "
             "and permutations; the same split) and average the salience; 2 or more also "
             "measure the ranking's stability.")] = 1,
    standardize: Annotated[bool, typer.Option(
        "--standardize/--no-standardize",
        help="Standardise every channel with its fit-row mean and standard deviation "
             "(channels constant on the fit rows are ignored), so units do not matter; "
             "--no-standardize feeds raw features.")] = True,
    protocol: Annotated[str, typer.Option(
        help="Defaults for every option above that is not given: " + RANK_PROTOCOLS.describe()
             + ".")] = "doctor",
    device: Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation, shuffling "
                                      "and permutations.")] = 0,
    out_dir: OutDir = DEFAULT_RUN,
    json_output: Annotated[bool, typer.Option("--json", help="Print rank.json plus the "
                                              "salience as one JSON document on stdout.")
                           ] = False,
    tensorboard: Tensorboard = None,
    quiet: Quiet = False,
) -> None:
    """Rank the channels of FEATS_A by modality-general decisive salience (Algorithm 1).

    Trains two networks to agree (Eq. 28), permutes each channel M times, and writes
    salience.npy (max 1) with rank.json, the split and both networks into --out.
    """
    given = {"repeats": repeats, "hidden": hidden, "epochs": epochs,
             "batch_size": batch_size, "lr": lr, "dist": dist, "normalize": normalize,
             "permute": permute, "test_split": test_split, "permute_on": permute_on,
             "patience": patience, "split": None if split is None else str(split),
             "estimator": estimator, "permutation": permutation, "chunk_rows": chunk_rows,
             "restarts": restarts, "standardize": standardize, "device": device,
             "groups": groups, "group_threshold": group_threshold, "seed": seed}
    # the protocol's defaults fill what the command line left at its own default
    protocol_keys = RANK_PROTOCOLS[protocol].options
    options = RankOptions.for_protocol(protocol, **{
        key: value for key, value in given.items()
        if key not in protocol_keys or _given(ctx, key)})
    with curves.tensorboard(tensorboard), progress_bars(quiet or json_output) as progress:
        result, document = rank_files(feats_a, feats_b, labels, out_dir, options, progress)
    for message in result.warnings:
        warn(message)
    if json_output:
        print_json({**document, "salience": result.salience.tolist()})
    elif not quiet:
        render.rank_summary(document, result.salience, out_dir)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` came from the command line (not its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"
