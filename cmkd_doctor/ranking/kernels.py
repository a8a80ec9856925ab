"""The permutation phase's fused GPU kernel (Algorithm 1, steps 5-7, in one pass).

Permuting channel ``j`` changes the first layer's pre-activation of a row by the rank-1
term ``delta_j * W1[:, j]`` (:mod:`cmkd_doctor.ranking.algorithm1`). For a network with one
hidden layer (the default ``--hidden 256``), the torch path writes the moved
pre-activations of a block of channels to memory, reads them back for the ReLU and the
H -> K product, and again for the distance. The Triton kernel here keeps a tile of rows'
pre-activations on chip instead and, for each channel, applies the rank-1 change, the
ReLU, the H -> K product (``tl.dot``, full float32 precision) and the distance's per-row
terms there, writing one partial sum per (channel, row tile): memory traffic is one read
of the tile per channel, where the torch path moves (channels x rows x H) floats three
times.

It runs where Triton compiles (CUDA) and, for tests, on the CPU under Triton's
interpreter (``TRITON_INTERPRET=1``, slow but the same program), where
``tests/test_kernels.py`` checks it against the torch path. Elsewhere, and for deeper
networks or multi-label KL, :func:`usable` is false and the torch path runs.
"""

from __future__ import annotations

import os

import torch

try:  # Triton ships with torch's CUDA builds; without it the torch path runs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

DISTANCES = {"mse": 0, "l1": 1, "kl": 2}  # the distances the kernel computes
BLOCK_ROWS = 64
BLOCK_HIDDEN = 32


def interpreted() -> bool:
    """Is Triton running kernels in its CPU interpreter (``TRITON_INTERPRET=1``)?"""
    return os.environ.get("TRITON_INTERPRET") == "1"


def usable(hidden: tuple[int, ...] | list[int], distance: str, multilabel: bool,
           device: torch.device) -> bool:
    """Can the fused kernel compute this permutation phase? One hidden layer, a distance
    of :data:`DISTANCES` (KL for single-label tasks), on CUDA with Triton, or on the CPU
    under Triton's interpreter."""
    if triton is None or len(hidden) != 1 or distance not in DISTANCES:
        return False
    if distance == "kl" and multilabel:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreted())


if triton is not None:

    @triton.jit
    def _moved_terms(pre_ptr, delta_ptr, w1_ptr, w2_ptr, b2_ptr, t_ptr, base_ptr, out_ptr,
                     rows_n, hidden_n, classes_n, n_tiles,
                     stride_pre, stride_delta, stride_w1, stride_w2, stride_t,
                     DIST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
                     BLOCK_K: tl.constexpr):
        # one program: channel j (fastest axis, so a row tile stays in cache across
        # channels) on one tile of rows
        j = tl.program_id(0)
        tile = tl.program_id(1)
        rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < rows_n
        ks = tl.arange(0, BLOCK_K)
        k_ok = ks < classes_n
        delta = tl.load(delta_ptr + rows * stride_delta + j, mask=row_ok, other=0.0)
        logits = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
        for h0 in range(0, hidden_n, BLOCK_H):
            hs = h0 + tl.arange(0, BLOCK_H)
            h_ok = hs < hidden_n
            pre = tl.load(pre_ptr + rows[:, None] * stride_pre + hs[None, :],
                          mask=row_ok[:, None] & h_ok[None, :], other=0.0)
            w1 = tl.load(w1_ptr + j * stride_w1 + hs, mask=h_ok, other=0.0)
            act = tl.maximum(pre + delta[:, None] * w1[None, :], 0.0)  # rank-1, ReLU
            w2 = tl.load(w2_ptr + ks[None, :] * stride_w2 + hs[:, None],
                         mask=h_ok[:, None] & k_ok[None, :], other=0.0)  # W2^T block
            logits += tl.dot(act, w2, input_precision="ieee")
        logits += tl.load(b2_ptr + ks, mask=k_ok, other=0.0)[None, :]
        target = tl.load(t_ptr + rows[:, None] * stride_t + ks[None, :],
                         mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if DIST == 0:  # squared error, summed over classes
            gap = tl.where(k_ok[None, :], logits - target, 0.0)
            terms = tl.sum(gap * gap, axis=1)
        elif DIST == 1:  # absolute error
            terms = tl.sum(tl.where(k_ok[None, :], tl.abs(logits - target), 0.0), axis=1)
        else:  # KL(softmax(logits) || softmax(target)) per row
            p = tl.where(k_ok[None, :], logits, float("-inf"))
            q = tl.where(k_ok[None, :], target, float("-inf"))
            p_max = tl.max(p, axis=1)
            q_max = tl.max(q, axis=1)
            p_exp = tl.where(k_ok[None, :], tl.exp(p - p_max[:, None]), 0.0)
            q_exp = tl.where(k_ok[None, :], tl.exp(q - q_max[:, None]), 0.0)
            log_p = p - p_max[:, None] - tl.log(tl.sum(p_exp, axis=1))[:, None]
            log_q = q - q_max[:, None] - tl.log(tl.sum(q_exp, axis=1))[:, None]
            terms = tl.sum(tl.where(k_ok[None, :], tl.exp(log_p) * (log_p - log_q), 0.0),
                           axis=1)
        base = tl.load(base_ptr + rows, mask=row_ok, other=0.0)
        moved = tl.where(row_ok, terms - base, 0.0)
        tl.store(out_ptr + j * n_tiles + tile, tl.sum(moved, axis=0))


def moved_increase(pre: torch.Tensor, delta: torch.Tensor, w1: torch.Tensor,
                   w2: torch.Tensor, b2: torch.Tensor, target: torch.Tensor,
                   base_terms: torch.Tensor, distance: str) -> torch.Tensor:
    """For each channel ``j`` of a block: the sum over rows of the distance's row term
    with the pre-activation moved by ``delta[:, j] * w1[j]``, minus ``base_terms``.

    ``pre`` ``(c, H)``: the rows' first-layer pre-activations; ``delta`` ``(c, B)``;
    ``w1`` ``(B, H)``: the block's first-layer weight columns; ``w2`` ``(K, H)`` and
    ``b2`` ``(K,)``: the head; ``target`` ``(c, K)``; ``base_terms`` ``(c,)``: the
    unmoved row terms. Returns ``(B,)`` float64 (partial sums added in float64).
    """
    c, hidden = pre.shape
    block, classes = delta.shape[1], w2.shape[0]
    n_tiles = triton.cdiv(c, BLOCK_ROWS)
    pre, delta, w1, w2 = (t.contiguous().float() for t in (pre, delta, w1, w2))
    target, b2, base_terms = (t.contiguous().float() for t in (target, b2, base_terms))
    partial = torch.empty(block, n_tiles, device=pre.device, dtype=torch.float32)
    _moved_terms[(block, n_tiles)](
        pre, delta, w1, w2, b2, target, base_terms, partial, c, hidden, classes, n_tiles,
        pre.stride(0), delta.stride(0), w1.stride(0), w2.stride(0), target.stride(0),
        DIST=DISTANCES[distance], BLOCK_R=BLOCK_ROWS, BLOCK_H=BLOCK_HIDDEN,
        BLOCK_K=max(16, triton.next_power_of_2(classes)))
    return partial.double().sum(1)
