"""Time Algorithm 1's permutation phase (steps 2-8): cmkd-doctor's vs the literal loop.

Both run on the same trained networks, data and permutations; the script checks they
agree and prints the speed-up. Results go in BENCHMARKS.md.

    python benchmarks/bench_permutation.py                 # the issue's CPU setting
    python benchmarks/bench_permutation.py --n 1000000 --d-a 2048 --skip-literal  # GPU

On CUDA with one hidden layer it also times the fused Triton kernel
(:mod:`cmkd_doctor.ranking.kernels`) on the same inputs (``fused_s``) and reports its largest
difference from the torch path, relative to the largest increase.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from literal import literal_permutation_distances

from cmkd_doctor.devices import resolve_device
from cmkd_doctor.io.streaming import RowSet
from cmkd_doctor.ranking.run import RankOptions, align, kernels, permutation_distances, permutations
from cmkd_doctor.training.engine import predict
from cmkd_doctor.training.losses import DISTANCES


def synthetic(n: int, d_a: int, d_b: int, k: int, seed: int = 0):
    """Paired features sharing a few decisive directions, labels from a linear rule."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 16, generator=gen)
    xa = torch.randn(n, d_a, generator=gen)
    xb = torch.randn(n, d_b, generator=gen)
    xa[:, :16] += shared
    xb[:, :16] += shared
    y = (shared @ torch.randn(16, k, generator=gen)).argmax(1)
    return xa, xb, y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--d-a", type=int, default=256)
    parser.add_argument("--d-b", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--hidden", default="256;0", help="';'-separated --hidden values")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--skip-literal", action="store_true")
    parser.add_argument("--skip-fused", action="store_true",
                        help="do not time the fused Triton kernel (CUDA, one hidden layer)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    xa, xb, y = synthetic(args.n, args.d_a, args.d_b, args.classes)
    xa, xb, y = xa.to(device), xb.to(device), y.to(device)
    perms = permutations(args.n, args.repeats, seed=0)
    mse = DISTANCES["mse"]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"n={args.n} d_a={args.d_a} d_b={args.d_b} K={args.classes} M={args.repeats}")
    rows = []
    for hidden in args.hidden.split(";"):
        options = RankOptions(hidden=hidden, epochs=args.train_epochs, device=str(device),
                              patience=0).checked()
        [(net_a, net_b, _)] = align(RowSet.of_tensors([xa, xb, y]), args.classes, False,
                                    options)
        target = predict(net_b, xb)
        permutation_distances(net_a, xa[:512], target[:512], mse, perms[:1, :512] % 512)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        increase, base = permutation_distances(net_a, xa, target, mse, perms, fused=False)
        sync(device)
        fast_s = time.perf_counter() - t0
        row = {"hidden": hidden, "fast_s": round(fast_s, 3)}
        if device.type == "cuda":
            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        if kernels.usable(options.hidden, "mse", False, device) and not args.skip_fused:
            # the fused Triton kernel (cmkd_doctor.ranking.kernels): compiled first, then timed
            permutation_distances(net_a, xa[:512], target[:512], mse, perms[:1, :512] % 512,
                                  fused=True)
            sync(device)
            t0 = time.perf_counter()
            fused, _ = permutation_distances(net_a, xa, target, mse, perms, fused=True)
            sync(device)
            row["fused_s"] = round(time.perf_counter() - t0, 3)
            row["fused_max_rel_diff"] = float(((fused - increase).abs()).max()
                                              / increase.abs().max())
        if not args.skip_literal:
            t0 = time.perf_counter()
            literal = literal_permutation_distances(net_a, xa, target, mse, perms)
            sync(device)
            row["literal_s"] = round(time.perf_counter() - t0, 3)
            row["speedup"] = round(row["literal_s"] / fast_s, 1)
            fast = (base + increase).cpu()
            row["max_rel_diff"] = float(((fast - literal).abs() / literal.abs()).max())
            # the 16 channels holding the shared signal: same top-16 set in both
            top = 16
            row["same_top16"] = set(np.argsort(-fast.mean(1).numpy())[:top].tolist()) == set(
                np.argsort(-literal.mean(1).numpy())[:top].tolist())
        print(json.dumps(row))
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "device": str(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
