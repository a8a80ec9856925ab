"""Algorithm 1, steps 2-8, exactly as written: one full forward pass per (channel, repeat).

The baseline that ``cmkd_doctor.ranking.run.permutation_distances`` is timed and checked
against. Kept out of the package on purpose: nobody should run it for real.
"""

from __future__ import annotations

import torch

from cmkd_doctor.training.losses import Distance
from cmkd_doctor.training.mlp import Net


@torch.no_grad()
def literal_permutation_distances(net: Net, x: torch.Tensor, target: torch.Tensor,
                                  distance: Distance, perms: torch.Tensor,
                                  multilabel: bool = False) -> torch.Tensor:
    """``(d, M)`` Dist(net(x with column i permuted by perms[m]), target), float64;
    ``perms (M, n, d)`` permutes column i by ``perms[m, :, i]`` instead."""
    n, d = x.shape
    out = torch.zeros(d, len(perms), dtype=torch.float64)
    for i in range(d):  # step 2
        for m, perm in enumerate(perms):  # step 4
            permuted = x.clone()
            rows = perm if perm.dim() == 1 else perm[:, i].long()
            permuted[:, i] = x[rows, i]  # step 5
            out[i, m] = float(distance(net(permuted), target, multilabel))  # step 6
    return out
