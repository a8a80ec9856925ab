"""cmkd-doctor from Python: generate the paper's Gaussian data, rank, score the ranking.

    python examples/python_api.py [--hidden 0]

Every CLI command is one library call; this script uses the same calls as
`cmkd-doctor examples make gaussian` and `cmkd-doctor rank`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from cmkd_doctor import RankOptions, rank_files
from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="256")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    # Appendix B.2, Eq. 27: a holds 10 shared and 10 a-specific decisive channels
    data = make_gaussian(GaussianSpec(d=30, j2=20, n_train=4000, seed=args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_gaussian(data, folder / "gaussian")
        result, document = rank_files(folder / "gaussian/feats_a.npy",
                                      folder / "gaussian/feats_b.npy",
                                      folder / "gaussian/labels.npy",
                                      out=folder / "run",
                                      options=RankOptions(hidden=args.hidden, seed=args.seed))

    general = data.truth["channels_a"]["general"]
    top = np.argsort(-result.salience)[: len(general)]
    precision = len(set(top.tolist()) & set(general)) / len(general)
    test = document["aligned"]["metrics"]["a"]["test"]["accuracy"]
    print(f"f1 test accuracy {100 * test:.1f}%; planted modality-general channels of a: "
          f"{sorted(general)}")
    print(f"top {len(general)} by salience: {sorted(top.tolist())}; precision {precision:.2f}")


if __name__ == "__main__":
    main()
