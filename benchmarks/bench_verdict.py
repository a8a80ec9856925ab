"""Time to verdict: ``cmkd-doctor diagnose`` end to end on real data.

Runs ``diagnose --json`` in a child process (one at a time: two torch processes on few
cores slow each other) on

- AV-MNIST, built from the raw MNIST test set and the Free Spoken Digit Dataset in
  --data (``../shared/data`` by default) with ``examples make avmnist``: images
  (10,000 x 784) as the teacher's modality, audio (10,000 x 512) as the student's, the
  FSDD split;
- the 15-Scenes multi-view features (view1 -> view2, 4,485 rows), as given.

and reports the wall time, the phases (aligning, permuting, teachers, students), the
epochs the aligned pairs and the students trained summed over members, the verdict, and
the run's *arithmetic floor*: the matrix products of those epochs (forward and weight
gradients of the aligned pairs and the students, their validation passes) at the best
rate this machine's batched matrix product reaches at the same shapes, measured right
after the run. Wall times from different days on one machine differ (its memory-bound
speed varies); the ratio of the wall time to the floor measured in the same session
does not depend on that. Results go in BENCHMARKS.md.

    python benchmarks/bench_verdict.py                 # both data sets
    python benchmarks/bench_verdict.py --only scene15
    python benchmarks/bench_verdict.py --only avmnist -- --seeds 5   # diagnose options
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cmkd_doctor.io.splits import VAL_FRACTION
from cmkd_doctor.training.mlp import parameter_count

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd_doctor", *args], capture_output=True,
                          text=True, cwd=ROOT)


def bmm_rate(members: int, rows: int, d_in: int, d_out: int, tries: int = 5) -> float:
    """The best FLOP/s of ``torch.bmm`` at one layer's training shape: ``members`` x
    (``rows`` x ``d_in``) x (``d_in`` x ``d_out``)."""
    x, w = torch.randn(members, rows, d_in), torch.randn(members, d_in, d_out)
    torch.bmm(x, w)  # warm up
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        for _ in range(10):
            torch.bmm(x, w)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2.0 * members * rows * d_in * d_out / best


def fit_flop(d_in: int, hidden: list[int], n_classes: int, fit_rows: int, val_rows: int
             ) -> float:
    """Matrix-product FLOP of one member-epoch: each fitted row's forward pass and weight
    gradients (the first layer needs no input gradient), each validation row's forward
    pass (biases counted as weights)."""
    weights = parameter_count(d_in, hidden, n_classes)
    first = d_in * (hidden or [n_classes])[0]
    return fit_rows * (6 * weights - 2 * first) + val_rows * 2 * weights


def floor(doc: dict) -> dict:
    """The arithmetic floor of a ``diagnose --json`` document's aligned pairs and
    students (teachers, permutations and gamma not counted: a lower bound)."""
    rank = doc["rank"]
    d_a, d_b = (rank["inputs"][k]["shape"][1] for k in ("feats_a", "feats_b"))
    k = rank["labels"]["n_classes"]
    hidden = rank["options"]["hidden"]
    student_hidden = doc["options"]["train"]["hidden"] or hidden
    train = rank["split"]["n_train"]
    val = round(train * VAL_FRACTION)
    restarts = len(rank["unpermuted_distance_per_restart"])
    batch = rank["options"]["batch_size"] or train - val
    aligned = rank["timings"]["aligned_epochs"] * (fit_flop(d_a, hidden, k, train - val, val)
                                                   + fit_flop(d_b, hidden, k, train - val, val))
    students = doc["timings"]["student_epochs"] * fit_flop(d_b, student_hidden, k,
                                                            train - val, val)
    rates = {"aligned": max(bmm_rate(restarts, batch, d, (hidden or [k])[0])
                            for d in (d_a, d_b)),
             # the first look's stack: every row with as many seeds as the fewest has
             "students": bmm_rate(len(doc["results"]) * min(len(r["student_runs"])
                                                            for r in doc["results"]),
                                  doc["options"]["train"]["batch_size"], d_b,
                                  (student_hidden or [k])[0])}
    seconds = aligned / rates["aligned"] + students / rates["students"]
    return {"floor_s": round(seconds, 1), "aligned_tflop": round(aligned / 1e12, 2),
            "students_tflop": round(students / 1e12, 2),
            "gflop_per_s": {key: round(r / 1e9) for key, r in rates.items()}}


def diagnose(name: str, inputs: list[str], extra: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    done = cli("diagnose", *inputs, *extra, "--out", str(out), "--json", "--device", "cpu")
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: diagnose failed\n{done.stderr}")
    doc = json.loads(done.stdout)
    bound = floor(doc)
    return {"data": name, "wall_s": round(wall, 1), **bound,
            "wall_over_floor": round(wall / bound["floor_s"], 2),
            "rank": doc["rank"]["timings"], "distill": doc.get("timings"),
            "students": {r["label"]: round(r["student_mean"], 2) for r in doc["results"]},
            "seeds": {r["label"]: len(r["student_runs"]) for r in doc["results"]},
            "action": doc["verdict"].get("action"), "verdict": doc["verdict"]["text"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", choices=("avmnist", "scene15"))
    parser.add_argument("extra", nargs="*", help="more diagnose options (after --)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "avmnist"):
            made = cli("examples", "make", "avmnist", "--mnist", str(args.data / "mnist"),
                       "--fsdd", str(args.data / "fsdd"), "-o", str(tmp / "avmnist"))
            if made.returncode != 0:
                raise SystemExit(made.stderr)
            folder = tmp / "avmnist"
            print(json.dumps(diagnose(
                "avmnist", [str(folder / f) for f in ("image.npy", "audio.npy", "labels.npy")],
                ["--split", str(folder / "split.npz"), *args.extra], tmp / "run-avmnist")))
        if args.only in (None, "scene15"):
            folder = args.data / "multiview" / "scene15"
            print(json.dumps(diagnose(
                "scene15", [str(folder / f) for f in ("view1.npy", "view2.npy", "labels.npy")],
                args.extra, tmp / "run-scene15")))


if __name__ == "__main__":
    main()
