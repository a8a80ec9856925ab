#!/usr/bin/env bash
# The permutation-phase benchmark at GPU scale: n=1,000,000, d_a=2048, M=10.
# Run from the repository root on a CUDA machine; record the output in BENCHMARKS.md.
# The literal loop would run 20,480 full forward passes, so it is skipped here unless
# LITERAL=1 is set.
set -euo pipefail
cd "$(dirname "$0")"
extra=()
[ "${LITERAL:-0}" = 1 ] || extra+=(--skip-literal)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python bench_permutation.py --n 1000000 --d-a 2048 --d-b 128 --classes 10 --repeats 10 \
    --device cuda "${extra[@]}" "$@"
