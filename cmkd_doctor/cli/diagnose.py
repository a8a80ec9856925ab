"""``cmkd-doctor diagnose``: rank, derive teachers, distil and advise, in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from cmkd_doctor.cli._common import out, print_json, progress_bars
from cmkd_doctor.cli.distill import print_table
from cmkd_doctor.cli.rank import print_summary
from cmkd_doctor.diagnose import SWEEP, build_config, diagnose, load_config
from cmkd_doctor.rundir import DEFAULT_RUN


def diagnose_command(
    inputs: list[str] = typer.Argument(None, help="FEATS_A FEATS_B LABELS, as for rank.",
                                       show_default=False),
    example: str = typer.Option(None, help="Run on a built-in example instead "
                                "('cmkd-doctor examples list')."),
    config: Path = typer.Option(None, help="YAML file with options for every stage "
                                "(sections rank:, distill:, gaussian:, and example: or "
                                "inputs:); flags given here win."),
    out_dir: Path = typer.Option(None, "--out", "-o", help=f"Run directory [default: "
                                 f"{DEFAULT_RUN}]."),
    ratio: str = typer.Option(None, help="Nullifying ratio of the derived teachers, a comma "
                              "list, or auto [default: 0.5]."),
    sweep: bool = typer.Option(False, help="Distil every teacher at r = 0.1, 0.25, 0.5, 0.75 "
                               "and 0.9 (paper Fig. 5)."),
    hidden: str = typer.Option(None, help="Network widths for ranking and students "
                               "[default: 256]."),
    repeats: int = typer.Option(None, "--repeats", "-M", help="Permutations per channel "
                                "[default: 10]."),
    seeds: int = typer.Option(None, help="Student seeds per teacher [default: 5]."),
    epochs: int = typer.Option(None, help="Most training epochs [default: auto]."),
    chunk_rows: int = typer.Option(None, help="Rows read at a time from memory-mapped .npy "
                                   "inputs while ranking [default: all when they fit]."),
    device: str = typer.Option(None, help="auto, cpu, cuda or cuda:N [default: auto]."),
    seed: int = typer.Option(None, help="Seed of every stage [default: 0]."),
    split: Path = typer.Option(None, help="A .npz with 'train' and 'test' row indices "
                               "(e.g. a dataset's own split) instead of a random one."),
    json_output: bool = typer.Option(False, "--json", help="One JSON document with the "
                                     "results, the verdict and the advice."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or report."),
) -> None:
    """The whole doctor: rank, derive modality-general, -specific and random teachers,
    distil each against No-KD and Regular-KD, and say what it means and what to try.
    """
    raw = load_config(config) if config else {}
    if sweep:
        if ratio is not None:
            from cmkd_doctor.errors import InputError

            raise InputError("--sweep and --ratio both choose the ratios; give one")
        ratio = ",".join(map(str, SWEEP))
    overrides = {
        "rank": {"hidden": hidden, "repeats": repeats, "epochs": epochs, "device": device,
                 "chunk_rows": chunk_rows,
                 "seed": seed, "split": None if split is None else str(split)},
        "distill": {"ratios": ratio, "seeds": seeds, "epochs": epochs, "device": device,
                    "seed": seed},
    }
    settings = build_config(raw, overrides)
    if not inputs and example is None:
        example = raw.get("example")
        if example is None and "inputs" in raw:
            inputs = [raw["inputs"][k] for k in ("feats_a", "feats_b", "labels")]
    run_dir = out_dir or Path(raw.get("out", DEFAULT_RUN))
    with progress_bars(quiet or json_output) as progress:
        found = diagnose(inputs or None, example, run_dir, settings, progress)
    if json_output:
        print_json(found.to_dict())
        return
    if quiet:
        return
    print_summary(found.rank_document, found.rank.salience, run_dir)
    if found.truth:
        t = found.truth
        out.print(f"truth (generated data): the ranking put {t['precision']:.0%} of the "
                  f"{len(t['shared_channels'])} planted shared channels on top "
                  f"(gamma {t['gamma']:.2f})", markup=False)
    out.print()
    print_table(found.report)
    out.print("what to try:", markup=False)
    for line in found.advice:
        out.print(f"  - {line}", markup=False)
