"""Peak memory of ``rank`` or ``diagnose`` on inputs streamed in chunks.

Writes paired features of n rows (a: n x d_a float32, b: n x d_b float32) and labels with
a few planted shared channels into --dir, chunk by chunk (the arrays are never held in
memory), then runs ``cmkd-doctor rank`` (or ``diagnose``: rank, teachers and students)
on them as a child process and reports its wall time and peak resident set size
(VmHWM, which counts memory-mapped file pages too). A second run on --baseline-rows rows
of the same kind measures the model's own footprint (Python, torch, the networks), so
the difference is what the data costs. Results go in BENCHMARKS.md.

    python benchmarks/bench_stream.py                  # rank, 2,000,000 x 256 (2 GB)
    python benchmarks/bench_stream.py --n 200000       # a quick look
    python benchmarks/bench_stream.py --command diagnose --n 1000000 --d-a 128 --d-b 32 \
        -- --chunk-rows 50000 --epochs 1 --seeds 1 --device cpu

``--labels`` picks the task's shape: ``argmax`` (the default: ``--classes`` classes, the
argmax of a mix of the shared channels), ``sign`` (2 classes: the sign of the sum of 8
shared channels) or ``multilabel`` (``--classes`` multi-hot columns, each the sign of
one mix of the shared channels). ``--runs N`` repeats the baseline and the full run N
times, alternately, and reports the worst difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARED = 16  # planted channels carrying the label in both modalities


LABELS = ("argmax", "sign", "multilabel")


def write_data(folder: Path, n: int, d_a: int, d_b: int, classes: int, seed: int = 0,
               rows: int = 100_000, labels_kind: str = "argmax") -> None:
    """Features and labels written block by block into .npy files (no full copy in RAM)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((SHARED, classes))
    fa = np.lib.format.open_memmap(folder / "feats_a.npy", "w+", np.float32, (n, d_a))
    fb = np.lib.format.open_memmap(folder / "feats_b.npy", "w+", np.float32, (n, d_b))
    labels = np.empty((n, classes) if labels_kind == "multilabel" else n,
                      dtype=np.uint8 if labels_kind == "multilabel" else np.int64)
    for start in range(0, n, rows):
        c = min(rows, n - start)
        shared = rng.standard_normal((c, SHARED), dtype=np.float32)
        a = rng.standard_normal((c, d_a), dtype=np.float32)
        b = rng.standard_normal((c, d_b), dtype=np.float32)
        a[:, :SHARED] += 2 * shared
        b[:, :SHARED] += 2 * shared
        fa[start : start + c], fb[start : start + c] = a, b
        if labels_kind == "argmax":
            labels[start : start + c] = (shared @ mix).argmax(1)
        elif labels_kind == "sign":
            labels[start : start + c] = shared[:, :8].sum(1) > 0
        else:
            labels[start : start + c] = shared @ mix > 0
    fa.flush()
    fb.flush()
    del fa, fb
    np.save(folder / "labels.npy", labels)


# Runs the CLI, then prints the process's own peak RSS (VmHWM counts from exec, whereas
# ru_maxrss would include the benchmark's own memory inherited at fork).
_CHILD = """
import re, sys
from cmkd_doctor.cli import main
code = main(sys.argv[1:])
status = open('/proc/self/status').read()
print('VmHWM', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1), file=sys.stderr)
sys.exit(code)
"""


def run_command(command: str, folder: Path, out: Path, extra: list[str]) -> dict:
    """``cmkd-doctor COMMAND`` in a child process: wall time, peak RSS, its rank.json."""
    shutil.rmtree(out, ignore_errors=True)
    args = [command, str(folder / "feats_a.npy"), str(folder / "feats_b.npy"),
            str(folder / "labels.npy"), "--out", str(out), "--quiet", *extra]
    t0 = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _CHILD, *args], stderr=subprocess.PIPE,
                           text=True)
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise SystemExit(f"{command} failed: {' '.join(args)}\n{child.stderr}")
    peak_kib = int(child.stderr.split("VmHWM")[-1].split()[0])
    document = json.loads((out / "rank.json").read_text())
    salience = np.load(out / "salience.npy")
    found = {"command": "cmkd-doctor " + " ".join(args), "wall_s": round(wall, 1),
             "peak_rss_mib": round(peak_kib / 1024),
             "timings": document["timings"],
             "top_channels": np.argsort(-salience)[:SHARED].tolist()}
    if (out / "distill.json").is_file():
        results = json.loads((out / "distill.json").read_text())["results"].values()
        found["students"] = {r["label"]: round(r["student_mean"], 2) for r in results}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=("rank", "diagnose"), default="rank")
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--d-a", type=int, default=256)
    parser.add_argument("--d-b", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--labels", choices=LABELS, default="argmax",
                        help="the task's shape (see above)")
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1,
                        help="run the baseline and the full command this many times, "
                        "alternately, and report the worst difference (the peak of one "
                        "shape varies by a few hundred MiB between runs of the same code)")
    parser.add_argument("--dir", type=Path, default=Path("bench-stream-data"))
    parser.add_argument("--keep", action="store_true", help="keep the data afterwards")
    parser.add_argument("rank_args", nargs="*", default=["--epochs", "1", "--test-split",
                                                         "0.05", "--device", "cpu"],
                        help="extra options of the command (after --)")
    args = parser.parse_args()

    big, small = args.dir / "big", args.dir / "small"
    t0 = time.perf_counter()
    write_data(big, args.n, args.d_a, args.d_b, args.classes, labels_kind=args.labels)
    write_data(small, args.baseline_rows, args.d_a, args.d_b, args.classes,
               labels_kind=args.labels)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"data written in {time.perf_counter() - t0:.0f} s: a {args.n} x {args.d_a}, "
          f"b {args.n} x {args.d_b} float32 "
          f"({(big / 'feats_a.npy').stat().st_size / 2**30:.2f} GiB + "
          f"{(big / 'feats_b.npy').stat().st_size / 2**30:.2f} GiB)")
    try:
        above = []
        for run in range(1, args.runs + 1):
            base = run_command(args.command, small, args.dir / "out-small", args.rank_args)
            print(f"run {run} baseline (the model's own):", json.dumps(base))
            full = run_command(args.command, big, args.dir / "out-big", args.rank_args)
            print(f"run {run} full:", json.dumps(full))
            above.append(full["peak_rss_mib"] - base["peak_rss_mib"])
            print(f"run {run}: peak RSS above the baseline: {above[-1]} MiB; planted "
                  f"channels in the top {SHARED}: "
                  f"{len(set(full['top_channels']) & set(range(SHARED)))}/{SHARED}")
        print(f"peak RSS above the baseline, worst of {args.runs} run(s): {max(above)} MiB "
              f"(each: {', '.join(map(str, above))})")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
