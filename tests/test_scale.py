"""Scale: torchrun data parallelism, streaming from memory-mapped files, channel shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from cmkd_doctor import distributed
from cmkd_doctor.io import streaming
from cmkd_doctor.io.inputs import load_paired
from cmkd_doctor.io.outputs import write_text
from cmkd_doctor.io.streaming import BLOCKS_PER_CHUNK, RowSet, epoch_order, epoch_orders
from cmkd_doctor.ranking.run import (
    RankOptions,
    expected_increase,
    permutation_distances,
    permutations,
    rank,
)
from cmkd_doctor.training.losses import DISTANCES
from cmkd_doctor.training.mlp import Net, NetConfig


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "cmkd_doctor", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(gaussian_dir, tmp_path, cli):
    """2 processes (gloo on the CPU) give the single-process salience and students."""
    inputs = [str(gaussian_dir / f) for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    opts = ["--epochs", "25", "--seeds", "2", "--ratio", "0.5", "--device", "cpu"]
    one = cli("diagnose", *inputs, "--out", tmp_path / "one", "--quiet", *opts)
    assert one.code == 0, one.err
    two = _torchrun("diagnose", *inputs, "--out", str(tmp_path / "two"), *opts,
                    cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    # rank 0 alone prints: one report, one verdict
    assert two.stdout.count("Aligned networks") == 1
    assert two.stdout.count("verdict:") == 1

    s1 = np.load(tmp_path / "one" / "salience.npy")
    s2 = np.load(tmp_path / "two" / "salience.npy")
    assert np.abs(s1 - s2).max() < 1e-3
    assert list(np.argsort(-s1)[:10]) == list(np.argsort(-s2)[:10])
    r1 = json.loads((tmp_path / "one" / "distill.json").read_text())["results"]
    r2 = json.loads((tmp_path / "two" / "distill.json").read_text())["results"]
    assert r1.keys() == r2.keys()
    for key in r1:
        np.testing.assert_allclose(r1[key]["student_runs"], r2[key]["student_runs"], atol=1e-3)
    # and no stray files from the other rank (temporary names start with '.')
    assert not list((tmp_path / "two").rglob(".*"))


@pytest.mark.slow
def test_torchrun_rank_alone_and_distill_on_its_run(gaussian_dir, tmp_path):
    inputs = [str(gaussian_dir / f) for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    ranked = _torchrun("rank", *inputs, "--out", "run", "--epochs", "20", "--json",
                       "--device", "cpu", cwd=tmp_path)
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    document = json.loads(ranked.stdout)  # exactly one JSON document: rank 0's
    assert len(document["salience"]) == 50
    # '--' stops torchrun from reading --run as an abbreviation of its own --run-path
    distilled = _torchrun("--", "distill", "--run", "run", "--teacher", "general", "--ratio", "0.5",
                          "--seeds", "2", "--epochs", "20", "--device", "cpu", "--quiet",
                          cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr[-3000:]
    assert (tmp_path / "run" / "distill.json").is_file()


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()
    write_text(tmp_path / "x.txt", "hello")
    assert not (tmp_path / "x.txt").exists()
    monkeypatch.setenv("RANK", "0")
    write_text(tmp_path / "x.txt", "hello")
    assert (tmp_path / "x.txt").read_text() == "hello"


def test_channel_shards_add_up_to_the_whole():
    gen = torch.Generator().manual_seed(0)
    x, target = torch.randn(200, 10, generator=gen), torch.randn(200, 3, generator=gen)
    torch.manual_seed(0)
    net = Net(NetConfig(10, (8,), 3)).eval()
    perms = permutations(200, 4, seed=1)
    mse = DISTANCES["mse"]
    whole, base = permutation_distances(net, x, target, mse, perms)
    parts = [permutation_distances(net, x, target, mse, perms, channels=r)[0]
             for r in (range(0, 3), range(3, 10))]
    assert torch.equal(parts[0][3:], torch.zeros(7, 4, dtype=torch.float64))
    torch.testing.assert_close(parts[0] + parts[1], whole)


@pytest.fixture
def mapped(tmp_path):
    """Paired .npy files on disk, read back memory-mapped."""
    rng = np.random.default_rng(0)
    n = 900
    shared = rng.standard_normal((n, 4)).astype(np.float32)
    xa = rng.standard_normal((n, 12)).astype(np.float32)
    xb = rng.standard_normal((n, 6)).astype(np.float32)
    xa[:, :4] += 2 * shared
    xb[:, :4] += 2 * shared
    y = shared.argmax(1)  # every shared channel is decisive
    for name, array in (("a", xa), ("b", xb), ("y", y)):
        np.save(tmp_path / f"{name}.npy", array)
    return load_paired(tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "y.npy")


def test_streamed_rows_read_what_resident_rows_hold(mapped):
    assert isinstance(mapped.xa, np.memmap)
    index = np.random.default_rng(1).permutation(mapped.n)[:700]
    arrays = [mapped.xa, mapped.xb, mapped.labels.y]
    resident = RowSet(arrays, index, torch.device("cpu"))
    streamed = RowSet(arrays, index, torch.device("cpu"), chunk_rows=128)
    assert resident.resident and not streamed.resident
    positions = torch.tensor([5, 699, 0, 5, 300])
    for r, s in zip(resident.take(positions), streamed.take(positions), strict=True):
        assert torch.equal(r, s)
    chunks = list(streamed.chunks())
    assert [start for start, _ in chunks] == list(range(0, 700, 128))
    assert torch.equal(torch.cat([c[0] for _, c in chunks]), resident.tensors()[0])
    for which in (0, 1):
        for r, s in zip(resident.moments(which), streamed.moments(which), strict=True):
            torch.testing.assert_close(r, s, rtol=1e-5, atol=1e-5)
    # minibatches cover the epoch order once, whole batches per chunk
    order = epoch_order(700, streamed.chunk_rows, torch.Generator().manual_seed(0))
    one = torch.zeros(1, dtype=torch.long)
    got = torch.cat([b[0][0] for _, b in streamed.member_batches(order[None], one, 50)])
    assert torch.equal(got, resident.take(order)[0])
    # several members, each its own order: every member reads its own rows
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    orders = epoch_orders(700, streamed.chunk_rows, gens)
    seed_of = torch.tensor([1, 0, 1])
    for rowset in (resident, streamed):
        batches = list(rowset.member_batches(orders, seed_of, 50))
        xa = torch.cat([b[0] for _, b in batches], dim=1)  # (3, 700, 12)
        for member, which in enumerate(seed_of.tolist()):
            assert torch.equal(xa[member], resident.take(orders[which])[0])


# Chunk-sized arrays from the heap, each with a small block allocated after it that
# stays (a chunk's logits, say): once the arrays are freed, the small blocks pin them
# below the heap's top, so free() alone gives none of them back.
_FRAGMENTS = """
import re
import numpy as np
from cmkd_doctor.io import streaming

def anon():
    return int(re.search(r"RssAnon:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

big = np.ones(30 << 18, np.float32)  # mapped; freeing it raises glibc's mmap threshold
del big
chunks, kept = [], []
for _ in range(24):  # 8 MiB each, now from the heap
    chunks.append(np.ones(8 << 18, np.float32))
    kept.append(np.ones(1 << 14, np.float32))
del chunks
held = anon()
streaming.release_heap()
print(held, anon())
"""


@pytest.mark.slow
@pytest.mark.skipif(streaming._malloc_trim() is None or not os.path.exists("/proc/self/status"),
                    reason="glibc's malloc_trim and /proc")
def test_release_heap_returns_what_freed_chunks_left_resident():
    """Freed chunk arrays pinned below small live blocks stay resident (the streamed
    multi-label diagnose held 400-500 MiB so); release_heap hands them back."""
    env = {k: v for k, v in os.environ.items()  # glibc's own heap settings
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    found = subprocess.run([sys.executable, "-c", _FRAGMENTS], capture_output=True,
                           text=True, check=True, cwd=ROOT, env=env)
    held, after = (int(v) >> 10 for v in found.stdout.split())
    # 192 MiB were freed; at least 150 MiB of them must leave the resident set
    assert held - after >= 150, f"{held} MiB resident before release_heap, {after} after"


def test_streamed_permutation_phase_equals_resident(mapped):
    index = np.arange(mapped.n)
    arrays = [mapped.xa, mapped.xb, mapped.labels.y]
    streamed = RowSet(arrays, index, torch.device("cpu"), chunk_rows=100)
    x = RowSet(arrays, index, torch.device("cpu")).tensors()[0]
    torch.manual_seed(0)
    target = torch.randn(mapped.n, 3)
    perms = permutations(mapped.n, 3, seed=2)
    for hidden in ((16,), ()):
        torch.manual_seed(1)
        net = Net(NetConfig(12, hidden, 3)).eval()
        for tile in (None, 64 * 16):  # tiles of whole rows, and several per chunk
            a = permutation_distances(net, x, target, DISTANCES["mse"], perms,
                                      tile_elements=tile)
            b = permutation_distances(net, streamed, target, DISTANCES["mse"], perms,
                                      tile_elements=tile)
            torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-9)
            assert a[1] == pytest.approx(b[1])
        if not hidden:
            e1, _ = expected_increase(net, x, target, rows=128)
            e2, _ = expected_increase(net, streamed, target, rows=128)
            torch.testing.assert_close(e1, e2)


def test_epoch_order_streams_blocks_and_is_a_permutation():
    gen = torch.Generator().manual_seed(0)
    n, chunk = 10_000, 1280
    order = epoch_order(n, chunk, gen)
    assert torch.equal(order.sort().values, torch.arange(n))
    block = chunk // BLOCKS_PER_CHUNK
    for start in range(0, n, chunk):
        touched = set((order[start : start + chunk] // block).tolist())
        assert len(touched) <= BLOCKS_PER_CHUNK + 1
    # and a resident set (one chunk) is a plain uniform shuffle
    again = epoch_order(n, n, torch.Generator().manual_seed(0))
    assert torch.equal(again, torch.randperm(n, generator=torch.Generator().manual_seed(0)))
    # several orders over streamed rows visit the same rows in each chunk, each in its own
    # order, so one read of a chunk serves every member
    orders = epoch_orders(n, chunk, [torch.Generator().manual_seed(s) for s in (0, 1, 2)])
    assert torch.equal(orders[0], epoch_order(n, chunk, torch.Generator().manual_seed(0)))
    for start in range(0, n, chunk):
        sets = [set(o[start : start + chunk].tolist()) for o in orders]
        assert sets[0] == sets[1] == sets[2]
    assert not torch.equal(orders[1], orders[2])


def test_streamed_rank_finds_the_shared_channels(mapped):
    options = {"epochs": 30, "batch_size": 32, "repeats": 5, "hidden": "16", "device": "cpu"}
    resident = rank(mapped, RankOptions(**options))
    streamed = rank(mapped, RankOptions(**options, chunk_rows=100))
    assert not np.array_equal(resident.salience, streamed.salience)  # another order
    for result in (resident, streamed):
        assert set(np.argsort(-result.salience)[:4]) == {0, 1, 2, 3}
    assert resident.metrics["a"]["test"]["accuracy"] > 0.7
    assert streamed.metrics["a"]["test"]["accuracy"] > 0.7


def test_chunk_rows_must_be_positive(gaussian_dir, cli):
    inputs = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    result = cli("rank", *inputs, "--chunk-rows", "0", "--out", gaussian_dir / "never")
    assert result.code == 2
    assert result.err.startswith("error: --chunk-rows")
    assert not (gaussian_dir / "never").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is None or not torch.cuda.is_available(),
                    reason="needs a CUDA device")
def test_streamed_rank_on_cuda_finds_the_shared_channels(mapped):
    options = {"epochs": 30, "batch_size": 32, "repeats": 5, "hidden": "16", "chunk_rows": 100}
    result = rank(mapped, RankOptions(**options, device="cuda"))
    assert result.device.startswith("cuda")
    assert set(np.argsort(-result.salience)[:4]) == {0, 1, 2, 3}
    assert result.metrics["a"]["test"]["accuracy"] > 0.7
