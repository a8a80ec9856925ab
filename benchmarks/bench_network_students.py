"""Network students: a stack of S members under torch.func.vmap against the same members
run one after another inside each step (what StackedNetworks does on the CPU).

    python benchmarks/bench_network_students.py [--members 5] [--steps 5] [--batch 128]

For the built-in students on AV-MNIST's shapes (lenet5 on 1 x 28 x 28 images, cnn3 on
32 x 16 spectrograms), times ``--steps`` optimiser steps (forward, backward, Adam) of
one stacked model in each mode, after one warm-up step, and prints the seconds per
member-step of each and their ratio. On a GPU it runs on the GPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from cmkd_doctor.training.student_networks import Architecture, StackedNetworks


def per_member_step(arch: Architecture, members: int, steps: int, batch: int, vmap: bool,
                    device: torch.device) -> float:
    stacked = StackedNetworks([arch.new(seed) for seed in range(members)]).to(device)
    stacked.vmap = vmap
    opt = torch.optim.Adam(stacked.parameters(), lr=1e-3)
    x = torch.randn(members, batch, stacked.mean.shape[-1], device=device)
    y = torch.randint(0, arch.n_classes, (members * batch,), device=device)

    def step() -> None:
        logits = stacked(x, standardised=True)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, arch.n_classes), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (steps * members)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, {args.members} members, batch {args.batch}, {args.steps} steps")
    print("| student | rows | in turn (s per member-step) | vmap (s per member-step) | "
          "vmap / in turn |")
    print("|---|---|---|---|---|")
    for name, shape in (("lenet5", (1, 28, 28)), ("cnn3", (32, 16))):
        arch = Architecture(name, shape, 10)
        turn = per_member_step(arch, args.members, args.steps, args.batch, False, device)
        vmap = per_member_step(arch, args.members, args.steps, args.batch, True, device)
        print(f"| {name} | {' x '.join(map(str, shape))} | {turn:.4f} | {vmap:.4f} | "
              f"{vmap / turn:.2f} |")


if __name__ == "__main__":
    main()
