"""The doctor's calls on real data: the call at its defaults against the call at 40 seeds.

For every ordered pair of views of the two real multi-view sets (``scene15`` and
``leaves100``, three views each: 12 pairs, both directions) and for AV-MNIST (image ->
audio, built from the raw MNIST test set and FSDD recordings with ``examples make
avmnist``), this runs

1. ``diagnose`` at its defaults (``--seeds auto``, 4 to 20 seeds by row, the default
   rows at r = 0.5, the Control included): *the call at defaults*;
2. ``distill --seeds 40`` on the same run (the same ranking and teachers, 40 seeds for
   every row): *the call at 40 seeds*, the reference,

and reports, per pair and in total:

- the two decisions and whether they agree;
- *false calls*: a call at defaults that claims a difference (``use_teacher``,
  ``keep_regular``, ``use_control``) where the call at 40 seeds does not make that claim
  (another decision, or for "use X" a row that is neither its best nor within noise of
  it);
- how often the control explains the gain: a teacher's student clearly beats No-KD but
  not the Control (at 40 seeds), and how often the decision is ``use_control``;
- the seeds spent: student seeds over all rows at defaults against 40 per row.

The data root is ``--data`` (``../shared/data`` by default: ``multiview/``, ``mnist/``,
``fsdd/recordings``). Each run trains on the CPU, one at a time (two torch processes on
few cores slow each other); the whole benchmark takes about an hour on 2 cores.
Results go in BENCHMARKS.md ("Calls on real data").

    python benchmarks/bench_calls.py                      # everything
    python benchmarks/bench_calls.py --only scene15       # one set
    python benchmarks/bench_calls.py --json calls.json    # and the figures as JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETS = ("scene15", "leaves100")
REFERENCE_SEEDS = 40
CLAIMS = ("use_teacher", "keep_regular", "use_control")


def _facts(report: Any) -> dict[str, Any]:
    """What the benchmark reads of one comparison: its call and what it rests on."""
    v = report.verdict
    control = v.get("control") or {}
    seeds = {row.label: len(row.student_runs) for row in report.rows}
    return {
        "decision": v["decision"], "action": v["action"], "best": v["best"],
        "tied": (v.get("call") or {}).get("tied", []),
        "beyond_shared": v.get("beyond_shared", False),
        "kd": {k: v["kd"][k] for k in ("delta", "z", "clear")},
        "control_vs_none": {k: control["vs_none"][k] for k in ("delta", "z", "clear")},
        "best_vs_none": None if v["best"] == "No-KD" else {
            k: _versus(report, v["best"], "none")[k] for k in ("delta", "z", "clear")},
        "best_vs_control": {k: control["best_vs_control"][k] for k in ("delta", "z", "clear")},
        "seeds": seeds, "seeds_total": sum(seeds.values()), "rows": len(seeds),
    }


def _versus(report: Any, label: str, baseline: str) -> dict[str, Any]:
    row = next(r for r in report.rows if r.label == label)
    return report.versus(row)[baseline].to_dict()


def _false_call(at_defaults: dict[str, Any], reference: dict[str, Any]) -> bool:
    """A call at defaults that claims a difference the call at 40 seeds does not make."""
    if at_defaults["decision"] not in CLAIMS:
        return False
    if at_defaults["decision"] != reference["decision"]:
        return True
    if at_defaults["decision"] == "use_teacher":
        return at_defaults["best"] not in (reference["best"], *reference["tied"])
    return False


def _softer(facts: dict[str, Any]) -> bool:
    """A teacher's student clearly beats No-KD but not the Control: softer targets would
    explain the gain."""
    best = facts["best_vs_none"]
    return bool(best and best["clear"] and best["delta"] > 0
                and not (facts["best_vs_control"]["clear"]
                         and facts["best_vs_control"]["delta"] > 0))


def one(name: str, inputs: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Both calls on one pair: ``inputs`` is diagnose's ``example`` or its files and
    config."""
    from cmkd_doctor.diagnosis.diagnose import diagnose
    from cmkd_doctor.diagnosis.distill import distill
    from cmkd_doctor.diagnosis.options import DistillOptions

    run = scratch / name.replace(" ", "_").replace(">", "")
    t0 = time.perf_counter()
    found = diagnose(out=run, **inputs)
    t1 = time.perf_counter()
    reference = distill(run, DistillOptions(seeds=REFERENCE_SEEDS))
    t2 = time.perf_counter()
    at_defaults, at_40 = _facts(found.report), _facts(reference)
    return {"pair": name, "defaults": at_defaults, "reference": at_40,
            "agree": at_defaults["decision"] == at_40["decision"],
            "false_call": _false_call(at_defaults, at_40),
            "control_explains": {"defaults": _softer(at_defaults), "reference": _softer(at_40)},
            "seconds": {"diagnose": round(t1 - t0, 1), "distill_40": round(t2 - t1, 1)},
            "gamma": found.rank_document["gamma_estimate"]["value"],
            "paired": found.rank_document["pairing"]["paired"],
            "reliable": found.rank_document["alignment"]["reliable"]}


def _pairs(data: Path, only: str | None) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in SETS:
        if only in (None, name):
            for a, b in itertools.permutations(range(3), 2):
                found.append((f"{name} {a}->{b}", {"example": f"{name}:{a},{b}"}))
    if only in (None, "avmnist"):
        found.append(("avmnist image->audio", {"avmnist": data}))
    return found


def _avmnist_inputs(data: Path, scratch: Path) -> dict[str, Any]:
    """AV-MNIST built from the raw files, and diagnose's inputs on its split."""
    from dataclasses import replace

    from cmkd_doctor.diagnosis.diagnose import DiagnoseConfig
    from cmkd_doctor.examples.avmnist import AVMnistSpec, make_avmnist

    folder = scratch / "avmnist"
    make_avmnist(folder, data / "mnist", data / "fsdd" / "recordings", None, AVMnistSpec())
    config = DiagnoseConfig()
    return {"inputs": [folder / "image.npy", folder / "audio.npy", folder / "labels.npy"],
            "config": replace(config, rank=replace(config.rank,
                                                   split=str(folder / "split.npz")))}


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    spent = sum(r["defaults"]["seeds_total"] for r in results)
    reference = sum(REFERENCE_SEEDS * r["reference"]["rows"] for r in results)
    return {
        "pairs": n, "agree": sum(r["agree"] for r in results),
        "false_calls": sum(r["false_call"] for r in results),
        "claims_at_defaults": sum(r["defaults"]["decision"] in CLAIMS for r in results),
        "control_explains_at_40": sum(r["control_explains"]["reference"] for r in results),
        "use_control_at_40": sum(r["reference"]["decision"] == "use_control"
                                 for r in results),
        "use_control_at_defaults": sum(r["defaults"]["decision"] == "use_control"
                                       for r in results),
        "seeds_at_defaults": spent, "seeds_at_40": reference,
        "decisions_at_defaults": dict(sorted(
            {d: sum(r["defaults"]["decision"] == d for r in results)
             for d in {r["defaults"]["decision"] for r in results}}.items())),
        "decisions_at_40": dict(sorted(
            {d: sum(r["reference"]["decision"] == d for r in results)
             for d in {r["reference"]["decision"] for r in results}}.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", choices=(*SETS, "avmnist"))
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    from cmkd_doctor.examples.datasets import DATA_ENV

    os.environ[DATA_ENV] = str(args.data.resolve())  # where --example reads the sets
    results = []
    with tempfile.TemporaryDirectory(prefix="cmkd-bench-calls-") as tmp:
        scratch = Path(tmp)
        for name, inputs in _pairs(args.data, args.only):
            if "avmnist" in inputs:
                inputs = _avmnist_inputs(args.data, scratch)
            found = one(name, inputs, scratch)
            results.append(found)
            d, r = found["defaults"], found["reference"]
            print(f"{name:22s} defaults {d['decision']:13s} ({d['best']}, "
                  f"{d['seeds_total']} seeds)  40 seeds {r['decision']:13s} ({r['best']})  "
                  f"{'agree' if found['agree'] else 'DIFFER'}"
                  f"{'  FALSE CALL' if found['false_call'] else ''}  "
                  f"{found['seconds']['diagnose']:.0f}+{found['seconds']['distill_40']:.0f} s",
                  flush=True)
    total = summary(results)
    print(json.dumps(total, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "results": results, "summary": total}, indent=1))


if __name__ == "__main__":
    main()
