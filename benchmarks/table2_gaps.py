"""What moves Table 2: the official protocol, then one difference at a time.

Starting from ``examples reproduce table2`` on the official protocol (which draws the
official code's numbers), each step changes one thing towards cmkd-doctor's first
reading of the paper, so the change in MG-KD - Regular-KD and in the modality-general
teacher's accuracy is due to that thing alone:

1. official: CE + KL / K, students and derived teachers on a fresh draw, sizes 10 +
   5 ... 30 (gamma 0.75 is 10 a-specific + 30 shared);
2. + the paper's loss, 0.5 CE + 0.5 KL (rho = 0.5, KL summed over classes);
3. + the modality-general and random teachers trained on the first draw;
4. + the paper's sizes: 5, 10, 15 shared of 20 decisive coordinates (only gamma 0.75
   changes: 5 a-specific + 15 shared).

    python benchmarks/table2_gaps.py --runs 30

Results go in BENCHMARKS.md and the README.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from cmkd_doctor.examples.reproduce.gaussian import (
    EXPERIMENTS,
    PROTOCOLS,
    StudentLoss,
    _table2_setting,
    run_experiment,
)

GAMMAS = {"15+5": 0.25, "10+10": 0.5, "10+30": 0.75}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    table2 = EXPERIMENTS["table2"]
    official = PROTOCOLS["official"]
    settings = tuple(s for s in table2.settings["official"] if s.label in GAMMAS)
    paper_sizes = tuple(_table2_setting(20 - s, s, 20) for s in (5, 10, 15))
    first_draw = tuple(replace(m, draw="first") if m.name in ("general_teacher",
                                                             "random_teacher") else m
                       for m in table2.models)
    paper_loss = replace(official, loss=StudentLoss(0.5, 0.5, kd_per_class=False))
    steps = [
        ("1 official protocol", official, table2.models, settings),
        ("2 + loss 0.5 CE + 0.5 KL", paper_loss, table2.models, settings),
        ("3 + derived teachers on the first draw", paper_loss, first_draw, settings),
        ("4 + sizes 5/10/15 of 20", paper_loss, first_draw, paper_sizes),
    ]
    print(f"{'step':42s} " + "  ".join(f"gamma {g:.2f}: MG-Reg (SE), MG teacher"
                                       for g in GAMMAS.values()))
    for name, protocol, models, chosen in steps:
        experiment = replace(table2, models=models, settings={"official": chosen})
        results = run_experiment(experiment, replace(protocol, name="official"), args.runs,
                                 args.seed, torch.device("cpu"))
        cells = []
        for found in results:
            gain = found["general_kd"] - found["regular_kd"]
            se = gain.std(ddof=1) / len(gain) ** 0.5
            cells.append(f"{gain.mean():+.2f} ({se:.2f}), {found['general_teacher'].mean():.2f}")
        print(f"{name:42s} " + "  ".join(f"{c:>30s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
