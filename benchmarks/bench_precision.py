"""How well ``rank`` finds the planted shared channels, over seeds.

For each seed s, ``examples make gaussian --seed s`` draws the built-in example (50
channels per modality, 10 of a's shared with b), and ``rank --seed s`` ranks a's channels
in several ways; the precision is the share of the 10 planted shared channels among the
10 most salient. Prints one line per configuration with the mean, standard deviation
and range over seeds, and the per-seed values. Results go in BENCHMARKS.md.

    python benchmarks/bench_precision.py --seeds 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "MLP, held-out rows (default)": [],
    "MLP, training rows": ["--permute-on", "train"],
    "official protocol": ["--protocol", "official"],
}


def cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cmkd_doctor", *args], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--only", choices=list(CONFIGS), action="append")
    args = parser.parse_args()
    found: dict[str, list[float]] = {name: [] for name in args.only or CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            data = Path(tmp) / f"data{seed}"
            cli("examples", "make", "gaussian", "--seed", str(seed), "--out", str(data))
            general = json.loads((data / "truth.json").read_text())["channels_a"]["general"]
            for name in found:
                out = Path(tmp) / "run"
                cli("rank", str(data / "feats_a.npy"), str(data / "feats_b.npy"),
                    str(data / "labels.npy"), "--seed", str(seed), "--out", str(out),
                    "--quiet", *CONFIGS[name])
                salience = np.load(out / "salience.npy")
                top = np.argsort(-salience, kind="stable")[: len(general)]
                found[name].append(len(set(top.tolist()) & set(general)) / len(general))
                print(f"seed {seed} {name}: {found[name][-1]:.1f}", file=sys.stderr)
    for name, values in found.items():
        v = np.array(values)
        print(f"{name}: precision {v.mean():.2f} ± {v.std(ddof=1):.2f} (range "
              f"{v.min():.1f}-{v.max():.1f}) over seeds 0-{args.seeds - 1}: "
              f"{', '.join(f'{x:.1f}' for x in v)}")


if __name__ == "__main__":
    main()
