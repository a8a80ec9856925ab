"""Rerun the official MFH Gaussian scripts and record every run's accuracies as JSON.

The official code (https://github.com/zihuixue/MFH, ``gauss/main.py`` for Fig. 2 and
Fig. 3, ``gauss/main_modify_gamma.py`` for Table 2) is imported from a checkout given
with ``--mfh``; nothing of it is copied here. Its training functions are wrapped only to
record what they return, so every run is the official one, with the official seeds
(Table 2: ``--seed 42``, runs 42, 43, ...; figures: ``--seed 0``).

``--fix-swap`` corrects the one bug the Table 2 script has: its Regular-KD call feeds
x^b to the teacher and trains the student on x^a. The wrapper swaps those two arguments
back on that call (the first of the two ``train_kd`` calls of every run) and changes
nothing else.

    python benchmarks/rerun_official.py --mfh /path/to/MFH table2 --fix-swap --out t2.json

``module`` turns such files into ``cmkd_doctor/examples/official_runs.py`` (mean and std, ddof 1,
of every model and difference per setting):

    python benchmarks/rerun_official.py module t2_fixed.json t2_shipped.json fig2.json \
        fig3.json > cmkd_doctor/examples/official_runs.py

The figures ``cmkd_doctor.examples.reproduce`` prints beside its own came from this script at
commit e6e4e85 of the official repository (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

# (a-specific, shared) decisive channels of every setting
TABLE2 = [(15, 5), (10, 5), (10, 10), (10, 15), (10, 20), (10, 25), (10, 30)]
TABLE2_KEYS = ("regular_teacher", "no_kd", "regular_kd", "{mode}_teacher", "{mode}_kd")


def table2(mfh: Path, seed: int, runs: int, fix_swap: bool,
           modes: tuple[str, ...] = ("gt", "random")) -> list[dict]:
    sys.path.insert(0, str(mfh / "gauss"))
    import main_modify_gamma as official  # noqa: PLC0415

    official.n_train, official.n_test, official.device = 200, 1000, torch.device("cpu")
    record: list[float] = []
    train, train_kd = official.train, official.train_kd

    def recorded_train(*args, **kwargs):
        model, acc = train(*args, **kwargs)
        record.append(acc)
        return model, acc

    def recorded_train_kd(*args, **kwargs):
        args = list(args)
        if fix_swap and len(record) % 5 == 2:  # the Regular-KD call: third model of a run
            args[0], args[1] = args[1], args[0]
        acc = train_kd(*args, **kwargs)
        record.append(acc)
        return acc

    official.train, official.train_kd = recorded_train, recorded_train_kd
    rows = []
    for specific, shared in TABLE2:
        row = {"a_specific": specific, "shared": shared,
               "gamma": shared / (specific + shared)}
        for mode, name in (("gt", "general"), ("random", "random")):
            if mode not in modes:
                continue
            record.clear()
            with contextlib.redirect_stdout(io.StringIO()):
                official.run(seed, mode, specific, shared, [1, 1], runs)
            acc = 100 * np.asarray(record).reshape(runs, 5)
            for column, key in enumerate(TABLE2_KEYS):
                row[key.format(mode=name)] = acc[:, column].round(2).tolist()
        rows.append(row)
        print(f"gamma {row['gamma']:.3f}: general_kd - regular_kd "
              f"{np.mean(np.subtract(row['general_kd'], row['regular_kd'])):+.2f}, "
              f"general teacher {np.mean(row['general_teacher']):.2f}", file=sys.stderr)
    return rows


def figure(mfh: Path, seed: int, runs: int, name: str) -> list[dict]:
    sys.path.insert(0, str(mfh / "gauss"))
    import main as official  # noqa: PLC0415

    official.device = torch.device("cpu")
    mode, values = (("increase_gamma", [0, 2, 4, 6, 8, 10]) if name == "fig2"
                    else ("increase_alpha", [0, 10, 20, 30, 40]))
    rows = []
    for value in values:
        acc = 100 * np.array([official.run_mm(seed + i, value, mode) for i in range(runs)])
        row = {"overlap" if name == "fig2" else "a_specific": value}
        for column, key in enumerate(("regular_teacher", "no_kd", "regular_kd")):
            row[key] = acc[:, column].round(2).tolist()
        rows.append(row)
        print(f"{name} {value}: kd - no_kd {np.mean(acc[:, 2] - acc[:, 1]):+.2f}",
              file=sys.stderr)
    return rows


MODULE_HEAD = (
    '"""Figures of the official code, rerun (Table 2 as shipped and swap fixed).\n\n'
    "Written by ``benchmarks/rerun_official.py module`` from reruns of zihuixue/MFH at\n"
    "commit e6e4e85 (torch 2.14.1, CPU): per setting, the mean and standard deviation\n"
    "(ddof 1) over the official runs of the test accuracy (%) of every model and of the\n"
    "differences ``cmkd_doctor.examples.reproduce`` reports. Keys: (experiment, variant) -> seed,\n"
    'runs, rows by setting label ("a-specific+shared" decisive channels of x^a; Fig. 2:\n'
    '"overlap o": o of the 10 decisive channels of x^a shared with x^b).\n'
    '"""\n\n'
    'OFFICIAL_SOURCE = ("a rerun of the official code, zihuixue/MFH at commit e6e4e85 "\n'
    '                   "(gauss/main_modify_gamma.py, gauss/main.py), at the same seeds")\n\n')


def module(paths: list[Path]) -> str:
    from cmkd_doctor.examples.reproduce.gaussian import DIFFERENCES  # noqa: PLC0415 - the differences it prints

    entries = {}
    for path in paths:
        doc = json.loads(path.read_text())
        variant = "swap fixed" if doc["fix_swap"] else "as shipped"
        rows = {}
        for row in doc["rows"]:
            label = (f"overlap {row['overlap']}" if "overlap" in row
                     else f"{row['a_specific']}+{row.get('shared', 10)}")
            runs = {k: np.asarray(v) for k, v in row.items() if isinstance(v, list)}
            runs.update({k: runs[a] - runs[b] for k, (a, b) in DIFFERENCES.items()
                         if a in runs})
            rows[label] = {k: {"mean": round(float(v.mean()), 3),
                               "std": round(float(v.std(ddof=1)), 3)}
                           for k, v in runs.items()}
        entries[(doc["experiment"], variant)] = {"seed": doc["seed"], "runs": doc["runs"],
                                                 "rows": rows}
    lines = [MODULE_HEAD + "OFFICIAL_RUNS: dict[tuple[str, str], dict] = {"]
    for (experiment, variant), entry in entries.items():
        lines.append(f"    ({experiment!r}, {variant!r}): {{")
        lines.append(f"        \"seed\": {entry['seed']}, \"runs\": {entry['runs']}, \"rows\": {{")
        for label, row in entry["rows"].items():
            lines.append(f"            {label!r}: {{")
            lines += [f"                {key!r}: {{\"mean\": {v['mean']}, \"std\": {v['std']}}},"
                      for key, v in row.items()]
            lines.append("            },")
        lines.append("        },")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines).replace("'", '"') + "\n"


def main() -> None:
    if sys.argv[1:2] == ["module"]:
        print(module([Path(p) for p in sys.argv[2:]]), end="")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("table2", "fig2", "fig3"))
    parser.add_argument("--mfh", type=Path, required=True, help="a checkout of zihuixue/MFH")
    parser.add_argument("--seed", type=int, help="first seed (official: 42 table2, 0 figures)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fix-swap", action="store_true")
    parser.add_argument("--modes", default="gt,random",
                        help="table2: the official modes to run (gt: the modality-general "
                             "teacher; random: the random one)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.experiment == "table2":
        seed = 42 if args.seed is None else args.seed
        rows = table2(args.mfh, seed, args.runs, args.fix_swap,
                      tuple(args.modes.split(",")))
    else:
        seed = 0 if args.seed is None else args.seed
        rows = figure(args.mfh, seed, args.runs, args.experiment)
    args.out.write_text(json.dumps({"experiment": args.experiment, "seed": seed,
                                    "runs": args.runs, "fix_swap": args.fix_swap,
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
