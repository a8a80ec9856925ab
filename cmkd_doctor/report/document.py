"""The report's document: everything a run directory holds, read once into one JSON-able
dict (:func:`collect`), what its first screen says (:func:`diagnosis`), and several runs
side by side (:func:`compare`). Nothing here draws or lays out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmkd_doctor.diagnosis.verdict import sweet_spot
from cmkd_doctor.errors import InputError
from cmkd_doctor.examples.gaussian import planted_truth
from cmkd_doctor.io.rundir import RunDir, last_call
from cmkd_doctor.ranking.findings import check_ranking
from cmkd_doctor.ranking.run import channel_order, increases
from cmkd_doctor.schemas import stamp
from cmkd_doctor.teachers.masks import DERIVED
from cmkd_doctor.wording import all_said


def collect(run_dir: str | Path) -> dict[str, Any]:
    """Everything the run directory holds, as one document (read through the run
    directory's guarded loader: a damaged file is named, never a crash)."""
    run = RunDir(run_dir)
    rank = run.read_document()
    run.verify(rank)
    salience = run.read_salience(rank)
    distances = run.read_distances()
    if distances.ndim != 2 or distances.shape[0] != salience.shape[0]:
        raise InputError(f"{run.file('permuted_distances')}: shape {distances.shape} does "
                         f"not fit {salience.shape[0]} channels; rerun 'cmkd-doctor rank'")
    baselines = rank.get("unpermuted_distance_per_restart") or [rank["unpermuted_distance"]]
    if distances.shape[1] % len(baselines):
        raise InputError(f"{run.file('permuted_distances')}: {distances.shape[1]} columns do "
                         f"not split into {len(baselines)} restarts; rerun 'cmkd-doctor rank'")
    increase = increases(distances, baselines)  # (d, restarts x M), step 7
    constant = rank.get("constant_channels", [])
    order = channel_order(salience, constant)
    order = order[: len(order) - len(constant)]  # informative channels, most general first
    top = order[:20]
    scale = max(float(increase.mean(1).max()), 1e-12)
    doc: dict[str, Any] = {
        "run": str(run.path.resolve()),
        "rank": rank,
        "salience": {
            "values": salience.tolist(),
            "top": [{"channel": int(i), "salience": float(salience[i])} for i in order[:10]],
            "bottom": [{"channel": int(i), "salience": float(salience[i])}
                       for i in order[::-1][:10]],
            # the spread of each channel's increase across repeats, on the salience scale
            "spread_top": [{"channel": int(i), "mean": float(increase[i].mean() / scale),
                            "std": float(increase[i].std() / scale)} for i in top],
            "repeats": int(distances.shape[1]),
        },
        "teachers": run.teacher_sidecars(rank["run_id"]),
        "students": None,
        "truth": None,
    }
    results = run.read_distill()
    if results is not None and results.get("rank", {}).get("run_id") == rank["run_id"]:
        rows, other = last_call(results)
        doc["students"] = {"results": rows, "verdict": results.get("last_verdict"),
                           "advice": results.get("last_advice", []),
                           "other_options": other}
    doc["truth"] = planted_truth(rank, salience, run.read_json)
    doc["sweep"] = sweep(doc)
    return stamp("report", doc)


def sweep(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Student metric against r per derived teacher, when several ratios were distilled."""
    if not doc["students"]:
        return None
    series: dict[str, list[dict[str, float]]] = {}
    for row in doc["students"]["results"]:
        if row["teacher"] in DERIVED and row["ratio"] is not None:
            series.setdefault(row["teacher"], []).append(
                {"ratio": row["ratio"], "mean": row["student_mean"], "std": row["student_std"]})
    best = sweet_spot(series.get("general", []), mean="mean")
    if best is None:
        return None
    for points in series.values():
        points.sort(key=lambda p: p["ratio"])
    return {"series": series, "sweet_spot": best["ratio"], "sweet_spot_mean": best["mean"]}


def chosen_ratio(doc: dict[str, Any]) -> float:
    """The ratio the report's cut shows: the sweep's sweet spot, else the ratio of the
    best derived student, else 0.5."""
    if doc.get("sweep"):
        return float(doc["sweep"]["sweet_spot"])
    rows = (doc["students"] or {}).get("results", [])
    derived = [r for r in rows if r["teacher"] in DERIVED and r["ratio"] is not None]
    if derived:
        return float(max(derived, key=lambda r: r["student_mean"])["ratio"])
    return 0.5


def verdict_and_best(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The last verdict on the run's students (empty when none) and the row it names
    best (``None`` when there is none)."""
    students = doc["students"] or {}
    verdict = students.get("verdict") or {}
    rows = {r["label"]: r for r in students.get("results", [])}
    return verdict, rows.get(verdict.get("best", ""))


def diagnosis(doc: dict[str, Any]) -> dict[str, Any]:
    """What the first screen says: the verdict, the teacher to use and how to export it,
    the gain with its uncertainty, and the warnings that change how far to trust it."""
    rank = doc["rank"]
    verdict, best = verdict_and_best(doc)
    # results distilled before the headline existed show the verdict in full
    found: dict[str, Any] = {
        "verdict": verdict.get("headline") or verdict.get("text") or (
            "No students distilled on this ranking yet: run 'cmkd-doctor distill' (or "
            "diagnose)."),
        "reasoning": verdict.get("text") if verdict.get("headline") else None,
        "recommended": None, "gain": None, "warnings": [],
        "advice": (doc["students"] or {}).get("advice", [])}
    if best is not None:
        se = verdict.get("best_delta_vs_regular_se")
        versus = [f"{best[f'delta_vs_{name}']:+.2f} points over {label}"
                  + (f" (standard error {se:.2f})" if name == "regular" and se else "")
                  for name, label in (("regular", "Regular-KD"), ("none", "No-KD"))
                  if best[f"delta_vs_{name}"] is not None]  # never the row against itself
        found["gain"] = (f"{best['label']}, {best['metric']} {best['student_mean']:.2f} ± "
                         f"{best['student_std']:.2f} % over {len(best['student_runs'])} "
                         "seeds" + "".join(f"; {v}" for v in versus))
        use = next((step for step in (doc["students"] or {}).get("advice", [])
                    if step["code"] == "use_teacher" and step["command"]), None)
        if verdict.get("best_is_clear") and use is not None:
            found["recommended"] = {"teacher": best["label"], "file": best["teacher_file"],
                                    "export": use["command"]}
    # the checks, decided once when rank wrote them, worded in cmkd_doctor.wording; where
    # a teacher helps beyond what the shared information explains (the verdict's finding),
    # the little-shared and class-only lines give way to it: nothing here says otherwise
    findings = check_ranking(rank)
    if verdict.get("beyond_shared"):
        findings = [f for f in findings if f.code not in ("gamma", "pairing")]
        found["warnings"].append(next(
            line for line in (*(step["text"] for step in found["advice"]
                                if step["code"] == "beyond_shared"),
                              "A teacher helps beyond what the shared information "
                              "explains (see the verdict).")))
    found["warnings"] += all_said(findings, "screen")
    return found


def run_labels(paths: list[Path]) -> list[str]:
    """The shortest path tails that tell the runs apart (``a2b``, ``b2a``; ``x/run``,
    ``y/run``)."""
    parts = [p.resolve().parts for p in paths]
    for k in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    raise InputError("--compare: a run directory is given twice")


def _input_name(info: dict[str, Any]) -> str:
    return Path(str(info["path"])).name + (f":{info['key']}" if info.get("key") else "")


def advice_line(doc: dict[str, Any]) -> str:
    """The verdict as a few words for a summary table: what to do with this run."""
    verdict = (doc["students"] or {}).get("verdict")
    if not verdict:
        return "not distilled yet: run 'cmkd-doctor distill'"
    return verdict.get("action") or "see the verdict (distilled by an older version)"


def summary(doc: dict[str, Any], label: str) -> dict[str, Any]:
    """One run's row of a comparison: its inputs, the checks that say how far to trust
    its ranking, the best teacher with its gain, and what to do."""
    rank = doc["rank"]
    alignment = rank.get("alignment") or {}
    stability = rank.get("stability") or {}
    gamma = rank.get("gamma_estimate")
    verdict, best = verdict_and_best(doc)
    return {
        "label": label, "run": doc["run"],
        "teacher_inputs": _input_name(rank["inputs"]["feats_a"]),
        "student_inputs": _input_name(rank["inputs"]["feats_b"]),
        "permuted_modality": rank["permuted_modality"],
        "alignment": alignment.get("score"), "alignment_reliable": alignment.get("reliable"),
        "stability": stability.get("top_overlap"), "stable": stability.get("stable"),
        "gamma": None if not gamma else {k: gamma[k] for k in ("value", "low", "high")},
        "paired": (rank.get("pairing") or {}).get("paired"),
        "metric": None if best is None else best["metric"],
        "kd_delta": verdict.get("kd_delta"), "kd_delta_se": verdict.get("kd_delta_se"),
        "best": None if best is None else best["label"],
        "best_student": None if best is None else best["student_mean"],
        "gain_vs_regular": None if best is None else best["delta_vs_regular"],
        "gain_vs_regular_se": verdict.get("best_delta_vs_regular_se"),
        "gain_vs_none": None if best is None else best["delta_vs_none"],
        "best_is_clear": bool(verdict.get("best_is_clear")),
        "advice": advice_line(doc),
    }


def compare(run_dirs: list[str | Path]) -> dict[str, Any]:
    """Several runs side by side (a -> b against b -> a, two layers, two ratios): each
    run's report document and diagnosis under a label, with one summary row per run."""
    paths = [Path(r) for r in run_dirs]
    if len(paths) < 2:
        raise InputError(f"--compare needs at least two run directories; got {len(paths)}")
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise InputError(f"--compare {path}: given twice (as {seen[path.resolve()]})")
        seen[path.resolve()] = path
    docs = [collect(path) for path in paths]
    runs = [{"label": label, "summary": summary(doc, label), "diagnosis": diagnosis(doc),
             "report": doc} for label, doc in zip(run_labels(paths), docs, strict=True)]
    return stamp("compare", {"runs": runs})

