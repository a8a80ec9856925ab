"""The fused permutation kernel (Triton) against the torch path, on the CPU under
Triton's interpreter (``TRITON_INTERPRET=1``, read when a kernel is defined, hence a
child process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

_CHILD = r"""
import sys
import torch
from cmkd_doctor.ranking import kernels
from cmkd_doctor.ranking.algorithm1 import permutation_distances, permutations
from cmkd_doctor.training.losses import DISTANCES
from cmkd_doctor.training.mlp import NetConfig, new_net

assert kernels.interpreted()
torch.manual_seed(0)
n, d, width, classes = 150, 11, 40, int(sys.argv[1])  # 150 rows: a partial row tile
for name in ("mse", "l1", "kl"):
    net = new_net(NetConfig(d, (width,), classes), 3).eval()
    net.set_standardisation(torch.randn(d), torch.rand(d) + 0.5)
    x = torch.randn(n, d) * 2 + 1
    target = torch.randn(n, classes)
    perms = permutations(n, 2, seed=5)
    distance = DISTANCES[name]
    assert kernels.usable(net.config.hidden, name, False, torch.device("cpu"))
    fused, base = permutation_distances(net, x, target, distance, perms, fused=True,
                                        tile_elements=4096)  # several row chunks
    plain, base_t = permutation_distances(net, x, target, distance, perms, fused=False,
                                          tile_elements=4096)
    assert plain.abs().max() > 0, name
    assert base == base_t
    assert torch.allclose(fused, plain, rtol=1e-4, atol=1e-6 * plain.abs().max()), (
        name, (fused - plain).abs().max(), plain.abs().max())
    # a share of the channels (a distributed process's): the others stay 0
    part, _ = permutation_distances(net, x, target, distance, perms, fused=True,
                                    channels=range(3, 8))
    assert torch.allclose(part[3:8], plain[3:8], rtol=1e-4,
                          atol=1e-6 * plain.abs().max())
    assert not part[:3].any() and not part[8:].any()
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("classes", [10, 3])
def test_the_fused_kernel_gives_the_torch_paths_distances(classes):
    """Per channel and repeat, the kernel's increase of Dist (MSE, L1, KL) over the
    unpermuted value matches the torch path's to float32 accuracy, with partial row
    tiles, classes padded to the kernel's block, and a share of the channels."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", _CHILD, str(classes)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0 and child.stdout.strip() == "ok", child.stderr[-3000:]


def test_the_kernel_is_used_only_where_it_runs():
    from cmkd_doctor.ranking import kernels

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    if not kernels.interpreted():
        assert not kernels.usable((256,), "mse", False, cpu)  # the CPU takes the torch path
    assert kernels.usable((256,), "mse", False, cuda)
    assert not kernels.usable((256, 128), "mse", False, cuda)  # deeper: torch path
    assert not kernels.usable((), "mse", False, cuda)  # linear: the closed form
    assert not kernels.usable((256,), "kl", True, cuda)  # multi-label KL: torch path
