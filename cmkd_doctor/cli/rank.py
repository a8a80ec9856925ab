"""``cmkd-doctor rank``: Algorithm 1 on the user's arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from cmkd_doctor.cli._common import out, print_json, progress_bars, spark, warn
from cmkd_doctor.losses import DISTANCES
from cmkd_doctor.ranking import NORMALIZATIONS, RankOptions
from cmkd_doctor.rundir import DEFAULT_RUN, rank_files


def rank(
    feats_a: str = typer.Argument(..., help="Features of modality a (the teacher's), (n, d_a): "
                                  ".npy, .npz or .safetensors; FILE:KEY picks an array."),
    feats_b: str = typer.Argument(..., help="Features of modality b (the student's), (n, d_b), "
                                  "rows paired with FEATS_A."),
    labels: str = typer.Argument(..., help="Labels: (n,) class ids (integers or strings) or "
                                 "(n, K) multi-hot for multi-label tasks."),
    repeats: int = typer.Option(10, "--repeats", "-M", help="Permutations per channel "
                                "(Algorithm 1, M)."),
    hidden: str = typer.Option("256", help="Hidden widths of both networks: 0 for a linear "
                               "model, H for Linear-ReLU-Linear, a comma list for deeper MLPs."),
    epochs: int = typer.Option(None, help="Maximum training epochs for step 1 "
                               "[default: about 4000 optimiser steps]."),
    batch_size: int = typer.Option(256, help="Minibatch size."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    patience: int = typer.Option(10, help="Stop step 1 after this many epochs without "
                                 "improvement of the held-out Eq. 28 loss, keeping the best "
                                 "epoch; 0 trains all epochs."),
    dist: str = typer.Option("mse", help="Dist of Eq. 28: " + ", ".join(
        f"{k} ({v.description})" for k, v in DISTANCES.items()) + "."),
    normalize: str = typer.Option("max", help="Step 9: " + "; ".join(
        f"{k}: {v}" for k, v in NORMALIZATIONS.items()) + "."),
    permute: str = typer.Option("a", help="Modality whose channels are ranked: a, or b "
                                "(paper note 3)."),
    permute_on: str = typer.Option("test", help="Rows permuted in steps 2-8: test (held-out, "
                                   "robust to memorisation) or train."),
    test_split: float = typer.Option(0.2, help="Fraction of rows held out, stratified by "
                                     "class and seeded; saved as split.npz for later commands."),
    estimator: str = typer.Option("sampled", help="sampled: M permutations per channel; "
                                  "exact: the expectation over all permutations in closed "
                                  "form (needs --hidden 0 --dist mse)."),
    split: Path = typer.Option(None, help="A .npz with 'train' and 'test' row indices to use "
                               "instead of --test-split (e.g. a dataset's own split)."),
    chunk_rows: int = typer.Option(None, help="Rows read at a time from memory-mapped .npy "
                                   "inputs [default: all rows on the device when they fit "
                                   "(1 GiB on the CPU, half the free GPU memory), else chunk "
                                   "sets of about 128 MiB]."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation, shuffling and "
                             "permutations."),
    out_dir: Path = typer.Option(DEFAULT_RUN, "--out", "-o", help="Run directory to write."),
    json_output: bool = typer.Option(False, "--json", help="Print rank.json plus the salience "
                                     "as one JSON document on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
) -> None:
    """Rank the channels of FEATS_A by modality-general decisive salience (Algorithm 1).

    Trains two networks to agree (Eq. 28), permutes each channel M times, and writes
    salience.npy (max 1) with rank.json, the split and both networks into --out.
    """
    options = RankOptions(repeats=repeats, hidden=hidden, epochs=epochs, batch_size=batch_size,
                          lr=lr, dist=dist, normalize=normalize, permute=permute,
                          test_split=test_split, permute_on=permute_on, patience=patience,
                          split=None if split is None else str(split), estimator=estimator,
                          chunk_rows=chunk_rows, device=device, seed=seed)
    with progress_bars(quiet or json_output) as progress:
        result, document = rank_files(feats_a, feats_b, labels, out_dir, options, progress)
    for message in result.warnings:
        warn(message)
    if json_output:
        print_json({**document, "salience": result.salience.tolist()})
    elif not quiet:
        print_summary(document, result.salience, out_dir)


def _fmt(metrics: dict | None) -> str:
    if not metrics:
        return "-"
    return f"{100 * next(iter(metrics.values())):.2f}"


def print_summary(document: dict, salience: np.ndarray, out_dir: Path) -> None:
    """Aligned accuracies, top and bottom channels and a salience histogram."""
    aligned = document["aligned"]
    metric = next(iter((aligned["metrics"]["a"]["train"] or {}).keys()), "accuracy")
    table = Table(title=f"Aligned networks, {metric} (%)", title_justify="left")
    table.add_column("network")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    for side in ("a", "b"):
        m = aligned["metrics"][side]
        table.add_row(f"f{'1' if side == 'a' else '2'} on modality {side}",
                      _fmt(m["train"]), _fmt(m["test"]))
    out.print(table)
    out.print(f"epochs: {aligned['epochs_run']} run, best {aligned['best_epoch']};  "
              f"unpermuted distance {document['unpermuted_distance']:.4g};  "
              f"rows permuted: {document['permuted_rows']}")

    order = np.argsort(-salience, kind="stable")
    k = min(10, len(order))
    mod = document["permuted_modality"]
    top = ", ".join(f"{i} ({salience[i]:.2f})" for i in order[:k])
    bottom = ", ".join(f"{i} ({salience[i]:.2f})" for i in order[::-1][:min(5, len(order))])
    out.print(f"most modality-general channels of {mod}:  {top}", markup=False)
    out.print(f"least:  {bottom}", markup=False)

    counts, edges = np.histogram(np.clip(salience, 0, 1), bins=10, range=(0, 1))
    bars = spark(counts, low=0)
    out.print(f"salience histogram  0 |{bars}| 1   (bins of 0.1; counts {counts.tolist()})",
              markup=False)
    t = document["timings"]
    out.print(f"time: train {t['train_s']:.1f} s, permute {t['permute_s']:.1f} s;  "
              f"wrote {out_dir}/salience.npy and rank.json", markup=False)
