"""Time to verdict: ``cmkd-doctor diagnose`` end to end on real data.

Runs ``diagnose --json`` in a child process (one at a time: two torch processes on few
cores slow each other) on

- AV-MNIST, built from the raw MNIST test set and the Free Spoken Digit Dataset in
  --data (``../shared/data`` by default) with ``examples make avmnist``: images
  (10,000 x 784) as the teacher's modality, audio (10,000 x 512) as the student's, the
  FSDD split;
- the 15-Scenes multi-view features (view1 -> view2, 4,485 rows), as given.

and reports the wall time, the phases (aligning, permuting, teachers, students), the
epochs the students trained summed over members, and the verdict. Results go in
BENCHMARKS.md.

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

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmkd_doctor", *args], capture_output=True,
                          text=True, cwd=ROOT)


def diagnose(name: str, inputs: list[str], extra: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    done = cli("diagnose", *inputs, *extra, "--out", str(out), "--json", "--device", "cpu")
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: diagnose failed\n{done.stderr}")
    doc = json.loads(done.stdout)
    return {"data": name, "wall_s": round(wall, 1), "rank": doc["rank"]["timings"],
            "aligned_epochs": doc["rank"]["aligned"]["epochs_run"],
            "distill": doc.get("timings"),
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
