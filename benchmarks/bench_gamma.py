"""How the gamma estimate tracks a known gamma on the paper's Gaussian data (App. B.2).

``--d 20 --j1 10 --j2 10 --shared s`` for s = 0, 2, ..., 10 (gamma = s / (20 - s)), over
seeds, with the hyperplane ``ones`` (every decisive coordinate equally informative, so the
count gamma is the information share) and ``normal`` (App. B.2 as written, where the
hyperplane-weighted gamma is the information share). Prints one row per setting: the
count gamma, the weighted gamma, and the estimate's mean, min and max over seeds.

    python benchmarks/bench_gamma.py [--seeds 5]
    python benchmarks/bench_gamma.py --real ../shared/data   # the real examples

``--real DATA`` estimates gamma on the real examples instead: every pair of views of
``multiview/scene15`` and ``multiview/leaves100``, and AV-MNIST built from ``mnist/`` and
``fsdd/`` with the defaults of ``examples make avmnist``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian
from cmkd_doctor.inputs import load_paired
from cmkd_doctor.ranking import RankOptions, rank


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--real", type=Path, default=None)
    args = parser.parse_args()
    if args.real is not None:
        real(args.real)
        return
    t0 = time.perf_counter()
    print("| delta | shared | gamma | weighted (mean) | estimate mean | min | max | "
          "max abs error vs gamma | vs weighted |")
    print("|---|---|---|---|---|---|---|---|---|")
    for delta in ("ones", "normal"):
        for shared in range(0, 11, 2):
            found, weighted = [], []
            for seed in range(args.seeds):
                data = make_gaussian(GaussianSpec(d1=50, d2=50, d=20, j1=10, j2=10,
                                                  shared=shared, seed=seed, delta=delta))
                with tempfile.TemporaryDirectory() as folder:
                    write_gaussian(data, folder)
                    paired = load_paired(*(Path(folder) / f for f in
                                           ("feats_a.npy", "feats_b.npy", "labels.npy")))
                    result = rank(paired, RankOptions(device="cpu", repeats=2, restarts=1))
                found.append(result.gamma["value"])
                weighted.append(data.truth["gamma_weighted"])
            gamma = data.truth["gamma"]
            found, weighted = np.array(found), np.array(weighted)
            print(f"| {delta} | {shared} | {gamma:.3f} | {weighted.mean():.3f} | "
                  f"{found.mean():.3f} | {found.min():.3f} | {found.max():.3f} | "
                  f"{np.abs(found - gamma).max():.3f} | "
                  f"{np.abs(found - weighted).max():.3f} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


def real(data: Path) -> None:
    from cmkd_doctor.avmnist import make_avmnist
    from cmkd_doctor.gamma import estimate_gamma

    print("| data | views (a, b) | rows | V_a | V_b | V_ab | gamma | 95% interval | s |")
    print("|---|---|---|---|---|---|---|---|---|")

    def show(name: str, views: str, xa, xb, y) -> None:
        t0 = time.perf_counter()
        classes, y = np.unique(y, return_inverse=True)
        g = estimate_gamma(xa, xb, y, len(classes), False, seed=0)
        v = g.explained
        print(f"| {name} | {views} | {g.n_rows} | {v['a']:.3f} | {v['b']:.3f} | "
              f"{v['ab']:.3f} | {g.value:.3f} | {g.low:.3f}-{g.high:.3f} | "
              f"{time.perf_counter() - t0:.1f} |", flush=True)

    for name in ("scene15", "leaves100"):
        folder = data / "multiview" / name
        y = np.load(folder / "labels.npy")
        for a, b in ((0, 1), (0, 2), (1, 2)):
            show(name, f"{a}, {b}", np.load(folder / f"view{a}.npy"),
                 np.load(folder / f"view{b}.npy"), y)
    with tempfile.TemporaryDirectory() as folder:
        found = make_avmnist(folder, mnist=data / "mnist", fsdd=data / "fsdd")
        show("avmnist", "image, audio", found.image, found.audio, found.labels)


if __name__ == "__main__":
    main()
