"""How the gamma estimates track a known gamma on the paper's Gaussian data (App. B.2),
what they say on the real examples, and what they cost.

``--d 20 --j1 10 --j2 10 --shared s`` for s = 0, 2, ..., 10 (gamma = s / (20 - s)), over
seeds, with the hyperplane ``ones`` (every decisive coordinate equally informative, so the
count gamma is the information share) and ``normal`` (App. B.2 as written, where the
hyperplane-weighted gamma is the information share). Each setting is estimated twice: on
the files as drawn, and with feats_b's rows shuffled within each class (the rows then
share only their label: the paper's gamma is 0). Prints one row per setting: the count
gamma, the weighted gamma, the pair-level estimate's mean, min and max over seeds, the
label-level one's mean, and on the shuffled files the largest upper bound of the
pair-level interval and how many seeds the pairing check called paired.

    python benchmarks/bench_gamma.py [--seeds 5]
    python benchmarks/bench_gamma.py --real ../shared/data   # the real examples
    python benchmarks/bench_gamma.py --cost                  # its share of rank's time
    python benchmarks/bench_gamma.py --null 300              # false "paired" calls
    python benchmarks/bench_gamma.py --memory                # peak against gamma_bytes

``--real DATA`` estimates gamma on the real examples instead: every pair of views of
``multiview/scene15`` and ``multiview/leaves100`` in both directions, and AV-MNIST built
from ``mnist/`` and ``fsdd/`` with the defaults of ``examples make avmnist``.

``--null N`` draws N class-only data sets (the Gaussian layout above with s = seed mod
11, both hyperplanes, feats_b shuffled within class) and counts how often the pairing
check's z exceeds 2 and 3.

``--memory`` measures the estimate's peak host memory with tracemalloc on random
features of several widths, against :func:`cmkd_doctor.ranking.gamma.gamma_bytes`, the estimate
``rank`` checks before training.

``--cost`` times ``rank`` on the built-in example (``examples make gaussian``, rank's
defaults, one restart) and, inside it, the estimate: the label-level part alone (what
the estimate cost before the pair-level one) and the whole.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian
from cmkd_doctor.ranking.gamma import estimate_gamma, within_class_shuffles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--real", type=Path, default=None)
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--null", type=int, default=None)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    if args.memory:
        memory()
        return
    if args.null is not None:
        null(args.null)
        return
    if args.real is not None:
        real(args.real)
        return
    if args.cost:
        cost()
        return
    t0 = time.perf_counter()
    print("| delta | shared | gamma | weighted (mean) | pair-level mean | min | max | "
          "max abs error vs gamma | vs weighted | label-level mean | shuffled: largest high "
          "| shuffled: paired |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for delta in ("ones", "normal"):
        for shared in range(0, 11, 2):
            found, label, weighted, high, paired = [], [], [], [], 0
            for seed in range(args.seeds):
                data = make_gaussian(GaussianSpec(d1=50, d2=50, d=20, j1=10, j2=10,
                                                  shared=shared, seed=seed, delta=delta))
                g = estimate_gamma(data.xa, data.xb, data.y, 2, False, seed=0)
                found.append(g.value)
                label.append(g.label_level["value"])
                weighted.append(data.truth["gamma_weighted"])
                p = within_class_shuffles(data.y, 1, np.random.default_rng(1000 + seed))[0]
                shuffled = estimate_gamma(data.xa, data.xb[p], data.y, 2, False, seed=0)
                high.append(shuffled.high)
                paired += shuffled.pairing.paired
            gamma = data.truth["gamma"]
            found, weighted = np.array(found), np.array(weighted)
            print(f"| {delta} | {shared} | {gamma:.3f} | {weighted.mean():.3f} | "
                  f"{found.mean():.3f} | {found.min():.3f} | {found.max():.3f} | "
                  f"{np.abs(found - gamma).max():.3f} | "
                  f"{np.abs(found - weighted).max():.3f} | {np.mean(label):.3f} | "
                  f"{max(high):.3f} | {paired} of {args.seeds} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


def memory() -> None:
    import tracemalloc

    from cmkd_doctor.ranking.gamma import gamma_bytes

    print("| rows | d_a | d_b | peak (MiB) | gamma_bytes (MiB) | share | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for n, d_a, d_b in [(1000, 50, 50), (3000, 500, 100), (2000, 6000, 3000),
                        (3000, 4000, 200)]:
        rng = np.random.default_rng(0)
        xa = rng.standard_normal((n, d_a)).astype(np.float32)
        xb = rng.standard_normal((n, d_b)).astype(np.float32)
        y = rng.integers(0, 10, n)
        tracemalloc.start()
        t0 = time.perf_counter()
        estimate_gamma(xa, xb, y, 10, False, seed=0)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        bound = gamma_bytes(n, d_a, d_b)
        print(f"| {n} | {d_a} | {d_b} | {peak / 2**20:.0f} | {bound / 2**20:.0f} | "
              f"{peak / bound:.0%} | {seconds:.1f} |", flush=True)


def null(count: int) -> None:
    """How often rows that share only their class are called paired."""
    z, high = [], []
    for k in range(count):
        seed, delta = k // 2, ("ones", "normal")[k % 2]
        data = make_gaussian(GaussianSpec(d1=50, d2=50, d=20, j1=10, j2=10,
                                          shared=seed % 11, seed=seed, delta=delta))
        p = within_class_shuffles(data.y, 1, np.random.default_rng(7000 + seed))[0]
        found = estimate_gamma(data.xa, data.xb[p], data.y, 2, False, seed=seed)
        z.append(found.pairing.z)
        high.append(found.high)
    z = np.array(z)
    print(f"{count} class-only data sets: pairing z mean {z.mean():.2f}, std {z.std():.2f}, "
          f"largest {z.max():.2f}; z > 2 in {(z > 2).sum()}, z > 3 in {(z > 3).sum()}; "
          f"pair-level gamma's upper bound at most {max(high):.3f}")


def real(data: Path) -> None:
    from cmkd_doctor.examples.avmnist import make_avmnist

    print("| data | views (a, b) | rows | V_a | V_b | V_ab | label-level | pair-level "
          "(95% interval) | b predicts a's score: same row / same class | a predicts b's | "
          "pairing z | paired | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def show(name: str, views: str, xa, xb, y) -> None:
        t0 = time.perf_counter()
        classes, y = np.unique(y, return_inverse=True)
        g = estimate_gamma(xa, xb, y, len(classes), False, seed=0)
        v, c = g.explained, g.cross
        print(f"| {name} | {views} | {g.n_rows} | {v['a']:.3f} | {v['b']:.3f} | "
              f"{v['ab']:.3f} | {g.label_level['value']:.2f} | {g.value:.2f} ({g.low:.2f}-"
              f"{g.high:.2f}) | {c['a_to_b']['same_row']:.2f} / "
              f"{c['a_to_b']['same_class']:.2f} | {c['b_to_a']['same_row']:.2f} / "
              f"{c['b_to_a']['same_class']:.2f} | {g.pairing.z:.1f} | "
              f"{'yes' if g.pairing.paired else 'no'} | {time.perf_counter() - t0:.1f} |",
              flush=True)

    for name in ("scene15", "leaves100"):
        folder = data / "multiview" / name
        y = np.load(folder / "labels.npy")
        for a, b in ((0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)):
            show(name, f"{a}, {b}", np.load(folder / f"view{a}.npy"),
                 np.load(folder / f"view{b}.npy"), y)
    with tempfile.TemporaryDirectory() as folder:
        found = make_avmnist(folder, mnist=data / "mnist", fsdd=data / "fsdd")
        show("avmnist", "image, audio", found.image, found.audio, found.labels)
        show("avmnist", "audio, image", found.audio, found.image, found.labels)


def cost(repeats: int = 5) -> None:
    """rank's time on the built-in example, and the estimate's share of it."""
    from cmkd_doctor.examples.gaussian import write_gaussian
    from cmkd_doctor.io.inputs import load_paired
    from cmkd_doctor.ranking import gamma as module
    from cmkd_doctor.ranking.run import RankOptions, rank

    data = make_gaussian(GaussianSpec())
    with tempfile.TemporaryDirectory() as folder:
        write_gaussian(data, folder)
        paired = load_paired(*(Path(folder) / f for f in ("feats_a.npy", "feats_b.npy",
                                                          "labels.npy")))
        totals, whole, label = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            found = rank(paired, RankOptions(device="cpu", restarts=1))
            totals.append(time.perf_counter() - t0)
            whole.append(found.timings["gamma_s"])
            # the label-level part alone, on the same rows
            y = np.eye(2)[paired.labels.y]
            y = y - y.mean(axis=0)
            weights = module.bootstrap_weights(np.random.default_rng(0).integers(
                0, len(y), size=(module.BOOTSTRAP, len(y))), len(y))
            t0 = time.perf_counter()
            module.label_level_gamma(module.Ridge(paired.xa), module.Ridge(paired.xb),
                                     paired.xa, paired.xb, y, weights)
            label.append(time.perf_counter() - t0)
    total, g, lab = (float(np.median(x)) for x in (totals, whole, label))
    print(f"rank on the built-in example (1000 rows, 50 + 50 channels, one restart), "
          f"median of {repeats}: {total:.2f} s")
    print(f"  gamma estimate, whole: {g:.3f} s ({g / total:.1%} of rank)")
    print(f"  label-level part alone: {lab:.3f} s; the pair-level estimate and pairing "
          f"check add {g - lab:.3f} s ({(g - lab) / (total - g + lab):.1%} of rank "
          "without them)")


if __name__ == "__main__":
    main()
