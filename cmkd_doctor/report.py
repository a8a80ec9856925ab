"""The diagnosis as a report: everything a run directory holds, with plots.

:func:`collect` reads a run directory (rank, teachers, distill results, and the truth for
generated data) into one JSON-able document. :func:`plots` draws its figures with
matplotlib (the ``report`` extra) as PNG bytes, and says which it skipped without it.
:func:`to_markdown` and :func:`to_html` lay the document out; the HTML is one
self-contained file with the plots embedded, so it opens offline.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.errors import InputError
from cmkd_doctor.findings import check_ranking
from cmkd_doctor.gaussian import ranking_against_truth
from cmkd_doctor.outputs import check_out_file, json_text, write_bytes, write_text
from cmkd_doctor.ranking import channel_order, increases
from cmkd_doctor.rundir import RunDir, last_call
from cmkd_doctor.schemas import stamp
from cmkd_doctor.teachers import n_nullified
from cmkd_doctor.wording import all_said, say

# one colour per teacher mode, the same in every plot
MODE_COLOURS = {"none": "#8c8c8c", "regular": "#333333", "general": "#4c72b0",
                "random": "#dd8452", "specific": "#c44e52"}
CHECKPOINT_COLOUR = "#55a868"  # a teacher from a checkpoint

PLOTS = {
    "salience_sorted": "Salience, channels sorted (Algorithm 1, step 9)",
    "salience_histogram": "Salience histogram",
    "salience_spread": "Spread across repeats of the 20 most salient channels",
    "students": "Students by teacher against No-KD and Regular-KD",
    "sweep": "Student metric against the nullifying ratio r (paper Fig. 5)",
}


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
                           "other_options": other}
    # generated data: truth.json describes the feats_a.npy and feats_b.npy beside it,
    # whichever side of this ranking each was given as (a -> b or b -> a)
    permuted = Path(rank["inputs"][f"feats_{rank['permuted_modality']}"]["path"])
    side = {"feats_a.npy": "a", "feats_b.npy": "b"}.get(permuted.name)
    truth_path = permuted.parent / "truth.json"
    if side is not None and truth_path.is_file():
        truth = run.read_json(truth_path)
        try:
            doc["truth"] = ranking_against_truth(salience, truth, side)
        except (KeyError, TypeError, IndexError):
            doc["truth"] = None  # a truth.json of something else beside the inputs
    doc["sweep"] = sweep(doc)
    return stamp("report", doc)


def sweep(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Student metric against r per derived teacher, when several ratios were distilled."""
    if not doc["students"]:
        return None
    series: dict[str, list[dict[str, float]]] = {}
    for row in doc["students"]["results"]:
        if row["teacher"] in ("general", "random", "specific") and row["ratio"] is not None:
            series.setdefault(row["teacher"], []).append(
                {"ratio": row["ratio"], "mean": row["student_mean"], "std": row["student_std"]})
    general = series.get("general", [])
    if len({p["ratio"] for p in general}) < 2:
        return None
    for points in series.values():
        points.sort(key=lambda p: p["ratio"])
    best = max(general, key=lambda p: p["mean"])
    return {"series": series, "sweet_spot": best["ratio"], "sweet_spot_mean": best["mean"]}


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None without the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plots(doc: dict[str, Any]) -> tuple[dict[str, bytes], list[str]]:
    """PNG bytes per plot name; the second list names the plots skipped and why."""
    plt = _pyplot()
    if plt is None:
        return {}, [f"{name} (matplotlib is not installed: pip install "
                    "'cmkd-doctor[report]')" for name in PLOTS]
    import io

    made: dict[str, bytes] = {}
    skipped: list[str] = []

    def save(name: str, fig) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        made[name] = buffer.getvalue()

    salience = np.asarray(doc["salience"]["values"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ordered = np.sort(salience)[::-1]
    ratio = chosen_ratio(doc)
    informative = len(ordered) - len(doc["rank"].get("constant_channels") or [])
    keep = informative - n_nullified(ratio, informative)  # constant channels: nullified
    ax.plot(range(keep), ordered[:keep], marker=".", lw=1, color=MODE_COLOURS["general"],
            label=f"kept by the general teacher at r = {ratio:g}")
    ax.plot(range(keep, len(ordered)), ordered[keep:], marker=".", lw=1,
            color=MODE_COLOURS["none"], label="nullified")
    ax.axvline(keep - 0.5, ls="--", lw=1, color="#333333")
    ax.set(xlabel="channel, by salience (most modality-general first)",
           ylabel="salience (max = 1)", title=PLOTS["salience_sorted"])
    ax.legend(fontsize=7)
    save("salience_sorted", fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(salience, bins=20, color="#4c72b0")
    ax.set(xlabel="salience", ylabel="channels", title=PLOTS["salience_histogram"])
    save("salience_histogram", fig)

    spread = doc["salience"]["spread_top"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.errorbar(range(len(spread)), [s["mean"] for s in spread],
                yerr=[s["std"] for s in spread], fmt="o", capsize=3)
    ax.set_xticks(range(len(spread)), [str(s["channel"]) for s in spread], rotation=90)
    ax.set(xlabel="channel", ylabel="increase / max (mean ± std)",
           title=f"{PLOTS['salience_spread']} (M = {doc['salience']['repeats']})")
    save("salience_spread", fig)

    if doc["students"]:
        made["students"] = students_plot(plt, [(None, doc["students"]["results"])])
    else:
        skipped.append("students (no distill results for this ranking yet)")

    if doc["sweep"]:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        colours = MODE_COLOURS
        for name, points in doc["sweep"]["series"].items():
            r = [p["ratio"] for p in points]
            m = np.array([p["mean"] for p in points])
            s = np.array([p["std"] for p in points])
            ax.plot(r, m, marker="o", label=name, color=colours.get(name))
            ax.fill_between(r, m - s, m + s, alpha=0.2, color=colours.get(name))
        ax.axvline(doc["sweep"]["sweet_spot"], ls="--", color="#4c72b0", lw=1)
        ax.set(xlabel="nullifying ratio r (share of channels nullified)",
               ylabel="student metric (%)", title=PLOTS["sweep"])
        ax.legend()
        save("sweep", fig)
    else:
        skipped.append("sweep (fewer than two ratios distilled for the general teacher)")
    return made, skipped


DERIVED_MODES = ("general", "random", "specific")  # the MFH ordering, left to right
RUN_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
RUN_LINES = ("--", ":", "-.", (0, (5, 1, 1, 1)))


def student_groups(runs: list[tuple[str | None, list[dict[str, Any]]]]
                   ) -> tuple[list[tuple[str, float, int]], dict[str, float]]:
    """Where each student of :func:`students_plot` goes: the groups along the axis
    (name, start, slots), the baselines and teachers from files first, then one group
    per ratio holding its general, random and specific teachers in that order; and each
    row label's position."""
    def derived(row: dict[str, Any]) -> bool:
        return row["teacher"] in DERIVED_MODES and row["ratio"] is not None

    ratios = sorted({r["ratio"] for _, rows in runs for r in rows if derived(r)})
    others: list[str] = []
    for _, rows in runs:
        others += [r["label"] for r in rows if not derived(r) and r["label"] not in others]
    groups, starts, x = [], {}, 0.0
    for name, width in [(label, 1) for label in others] + [(f"r = {r:g}", 3) for r in ratios]:
        groups.append((name, x, width))
        starts[name] = x
        x += width + 0.8
    position = {}
    for _, rows in runs:
        for row in rows:
            position[row["label"]] = (
                starts[f"r = {row['ratio']:g}"] + DERIVED_MODES.index(row["teacher"])
                if derived(row) else starts[row["label"]])
    return groups, position


def students_plot(plt, runs: list[tuple[str | None, list[dict[str, Any]]]]) -> bytes:
    """Students by teacher against the baselines, as PNG: a group per ratio with the
    general, random and specific teachers' students side by side in their modes'
    colours (the ordering the hypothesis predicts reads left to right), a group per
    other teacher, and No-KD and Regular-KD as horizontal lines. Several runs share the
    axis, a marker and a line style each (``runs`` holds (label, rows); one run's label
    may be ``None``)."""
    import io

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups, position = student_groups(runs)
    offsets = np.linspace(-0.22, 0.22, len(runs)) if len(runs) > 1 else np.zeros(1)
    slots = sum(width for _, _, width in groups)
    fig, ax = plt.subplots(figsize=(min(10.0, max(7.0, 4.0 + 0.32 * slots)), 3.2))
    run_handles, modes, metrics = [], set(), []
    for k, (label, rows) in enumerate(runs):
        marker, style = RUN_MARKERS[k % len(RUN_MARKERS)], RUN_LINES[k % len(RUN_LINES)]
        metrics.append(rows[0]["metric"])
        for row in rows:
            mode = row["teacher"] if row["teacher"] in MODE_COLOURS else "checkpoint"
            modes.add(mode)
            ax.errorbar(position[row["label"]] + offsets[k], row["student_mean"],
                        yerr=row["student_std"], fmt=marker, markersize=6, capsize=2,
                        color=MODE_COLOURS.get(mode, CHECKPOINT_COLOUR))
            if row["teacher"] in ("none", "regular"):  # the levels every teacher is judged by
                ax.axhline(row["student_mean"], ls=style, lw=1,
                           color=MODE_COLOURS[row["teacher"]])
        if label is not None:
            run_handles.append(Line2D([], [], marker=marker, ls=style, color="#555555",
                                      label=f"{label} (lines: its baselines)"))
    ax.set_xticks([start + (width - 1) / 2 for _, start, width in groups],
                  [name for name, _, _ in groups], rotation=20 if len(groups) > 8 else 0,
                  fontsize=8)
    names = {"none": "No-KD (line: its level)", "regular": "Regular-KD (line: its level)",
             "general": "modality-general teacher", "random": "random teacher",
             "specific": "modality-specific teacher", "checkpoint": "teacher from a file"}
    handles = [Patch(color=MODE_COLOURS.get(m, CHECKPOINT_COLOUR), label=names[m])
               for m in (*MODE_COLOURS, "checkpoint") if m in modes]
    metric = metrics[0] if len(set(metrics)) == 1 else " / ".join(dict.fromkeys(metrics))
    ax.set(ylabel=f"student {metric} (%)", title=PLOTS["students"],
           xlabel="teacher (derived ones by nullifying ratio r)\nmean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles + run_handles, fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1), borderaxespad=0)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _table(headers: list[str], rows: list[list[Any]], fmt: str, ident: str = "") -> str:
    if fmt == "md":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    ident = f" id='{ident}'" if ident else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def chosen_ratio(doc: dict[str, Any]) -> float:
    """The ratio the report's cut shows: the sweep's sweet spot, else the ratio of the
    best derived student, else 0.5."""
    if doc.get("sweep"):
        return float(doc["sweep"]["sweet_spot"])
    rows = (doc["students"] or {}).get("results", [])
    derived = [r for r in rows if r["teacher"] in ("general", "random", "specific")
               and r["ratio"] is not None]
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
        "recommended": None, "gain": None, "warnings": []}
    if best is not None:
        se = verdict.get("best_delta_vs_regular_se")
        found["gain"] = (f"{best['label']}, {best['metric']} {best['student_mean']:.2f} ± "
                         f"{best['student_std']:.2f} % over {len(best['student_runs'])} "
                         f"seeds; {best['delta_vs_regular']:+.2f} points over Regular-KD"
                         + (f" (standard error {se:.2f})" if se else "")
                         + f", {best['delta_vs_none']:+.2f} over No-KD")
        teacher = next((t for t in doc["teachers"] if t["name"] == Path(
            str(best.get("teacher_file") or "")).stem), None)
        if verdict.get("best_is_clear") and teacher is not None:
            found["recommended"] = {
                "teacher": best["label"], "file": best["teacher_file"],
                "export": f"cmkd-doctor derive-teacher --run {doc['run']} --mode "
                          f"{teacher['mode']} --ratio {teacher['ratio']:g} --export-onnx "
                          "teacher.onnx"}
    # the checks, decided once when rank wrote them, worded in cmkd_doctor.wording
    screen = ("chance", "pairing", "gamma", "alignment", "stability", "constant")
    found["warnings"] = [say(f, "screen") for code in screen
                         for f in check_ranking(rank) if f.code == code and not f.ok]
    return found


def first_screen(doc: dict[str, Any], fmt: str, ident: str = "verdict") -> str:
    """The diagnosis as the report's first section (``md`` or ``html``; ``ident`` is
    the HTML id of the verdict)."""
    found = diagnosis(doc)
    if fmt == "md":
        parts = [f"**Verdict.** {found['verdict']}"]
        if found["recommended"]:
            r = found["recommended"]
            parts.append(f"**The {r['teacher']} teacher:** `{r['file']}`; export it with "
                         f"`{r['export']}`.")
        if found["gain"]:
            parts.append(f"**Best student.** {found['gain']}.")
        parts += [f"**Warning.** {w}" for w in found["warnings"]]
        if found["reasoning"]:
            parts.append(f"**Why.** {found['reasoning']}")
        return "\n\n".join(parts)
    parts = [f"<p id='{ident}' class='verdict'>{html.escape(found['verdict'])}</p>"]
    if found["recommended"]:
        r = found["recommended"]
        parts.append(f"<p class='use'>The {html.escape(r['teacher'])} teacher: "
                     f"<code>{html.escape(str(r['file']))}</code>; export it with "
                     f"<code>{html.escape(r['export'])}</code></p>")
    if found["gain"]:
        parts.append(f"<p>Best student: {html.escape(found['gain'])}.</p>")
    parts += [f"<p class='warning'>{html.escape(w)}</p>" for w in found["warnings"]]
    if found["reasoning"]:
        parts.append(f"<details class='why'><summary>Why: the verdict in full</summary><p>"
                     f"{html.escape(found['reasoning'])}</p></details>")
    return "".join(parts)


def sections(doc: dict[str, Any], fmt: str, ident: str = "verdict"
             ) -> list[tuple[str, str, list[str]]]:
    """(title, body, plot names) per section, the diagnosis first; ``fmt`` is ``md`` or
    ``html`` for tables."""
    rank = doc["rank"]
    out = [("Diagnosis", first_screen(doc, fmt, ident),
            ["students"] if doc["students"] else [])]
    inputs = [[name, info["path"], "x".join(map(str, info["shape"])), info["sha256"][:16]]
              for name, info in rank["inputs"].items()]
    options = ", ".join(f"{k}={v}" for k, v in rank["options"].items())
    env = ", ".join(f"{k} {v}" for k, v in rank["environment"].items())
    out.append(("Inputs and options",
                _table(["input", "path", "shape", "sha256"], inputs, fmt)
                + _para(f"rank options: {options}", fmt) + _para(f"environment: {env}", fmt), []))
    aligned = rank["aligned"]
    rows = []
    for side in ("a", "b"):
        for part in ("train", "test"):
            metrics = aligned["metrics"][side][part] or {}
            rows.append([f"f{'1' if side == 'a' else '2'} ({side})", part,
                         ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items()) or "-"])
    out.append(("Aligned networks (Eq. 28)", _table(["network", "rows", "metrics"], rows, fmt)
                + _para(f"epochs run {aligned['epochs_run']}, best {aligned['best_epoch']}; "
                        f"unpermuted distance {rank['unpermuted_distance']:.4g}; rows permuted: "
                        f"{rank['permuted_rows']}", fmt), []))
    sal = doc["salience"]
    top = _table(["channel", "salience"], [[t["channel"], f"{t['salience']:.3f}"]
                                           for t in sal["top"]], fmt)
    bottom = _table(["channel", "salience"], [[t["channel"], f"{t['salience']:.3f}"]
                                              for t in sal["bottom"]], fmt)
    out.append((f"Salience of modality {rank['permuted_modality']}",
                _para("Most modality-general channels:", fmt) + top
                + _para("Least:", fmt) + bottom + checks(rank, fmt),
                ["salience_sorted", "salience_histogram", "salience_spread"]))
    if doc["truth"]:
        t = doc["truth"]
        out.append(("Truth (generated data)",
                    _para(f"The ranking put {len(t['found'])} of the {len(t['shared_channels'])} "
                          f"planted shared channels on top (precision {t['precision']:.2f}); "
                          f"alpha {t['alpha']:.2f}, beta {t['beta']:.2f}, gamma "
                          f"{t['gamma']:.2f}"
                          + (f" (weighted by the hyperplane {t['gamma_weighted']:.2f})"
                             if t.get("gamma_weighted") is not None else "") + ".", fmt),
                    []))
    if doc["teachers"]:
        rows = [[t["name"], t["mode"], t["ratio"], len(t["nullified"]), t["fill"],
                 Path(str(t["source"])).name, t["refit"],
                 "-" if not t["metrics"] else ", ".join(f"{k} {100 * v:.2f}%"
                                                        for k, v in t["metrics"].items())]
                for t in doc["teachers"]]
        out.append(("Teachers", _table(["teacher", "mode", "r", "nullified", "fill", "source",
                                        "refit", "test metrics"], rows, fmt), []))
    if doc["students"]:
        results = doc["students"]["results"]
        rows = [[r["label"], "-" if r["teacher_metric"] is None else f"{r['teacher_metric']:.2f}",
                 f"{r['student_mean']:.2f} ± {r['student_std']:.2f}",
                 f"{r['delta_vs_none']:+.2f}", f"{r['delta_vs_regular']:+.2f}"]
                for r in results]
        verdict = (doc["students"].get("verdict") or {}).get("text", "")
        metric = results[0]["metric"]
        other = doc["students"].get("other_options", 0)
        left_out = (_para(f"{other} rows distilled with other options (another --rho, "
                          "--seeds, --seed, training or fill) are left out: they are another "
                          "experiment; distill.json keeps them.", fmt) if other else "")
        out.append(("Students (the paper's Table 4 shape)",
                    _table(["teacher", f"teacher {metric}", f"student {metric}", "vs No-KD",
                            "vs Regular-KD"], rows, fmt) + _para(f"Verdict: {verdict}", fmt)
                    + left_out, []))
    if doc["sweep"]:
        s = doc["sweep"]
        out.append(("Ratio sweep", _para(f"The modality-general teacher's student is best at "
                                         f"r = {s['sweet_spot']:g} ({s['sweet_spot_mean']:.2f}).",
                                         fmt), ["sweep"]))
    return out


def checks(rank: dict[str, Any], fmt: str) -> str:
    """What the ranking found and how far to trust it: the gamma estimate, pairing,
    chance, groups, alignment, stability, constant and negative channels, each with what
    it means (worded in :mod:`cmkd_doctor.wording`)."""
    order = ("gamma", "pairing", "chance", "groups", "alignment", "stability", "constant",
             "negative")
    findings = check_ranking(rank)
    said = all_said([f for code in order for f in findings if f.code == code], "explain")
    return "".join(_para(text, fmt) for text in said)


def _para(text: str, fmt: str) -> str:
    return f"\n\n{text}\n\n" if fmt == "md" else f"<p>{html.escape(text)}</p>"


def _md_sections(doc: dict[str, Any], images: dict[str, str], level: int = 2) -> list[str]:
    parts = []
    for title, body, names in sections(doc, "md"):
        parts.append(f"{'#' * level} {title}\n\n{body}")
        parts += [f"![{PLOTS[n]}]({images[n]})" for n in names if n in images]
    return parts


def to_markdown(doc: dict[str, Any], images: dict[str, str], skipped: list[str]) -> str:
    """Markdown; ``images`` maps plot names to the PNG files written beside it."""
    parts = [f"# cmkd-doctor report\n\nRun directory: `{doc['run']}`",
             *_md_sections(doc, images)]
    if skipped:
        parts.append("Plots skipped: " + "; ".join(skipped))
    return "\n\n".join(parts) + "\n"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;"
         "padding:0 1rem;color:#222}h1{font-size:1.6rem;margin:.2rem 0}p{margin:.45rem 0}"
         "table{border-collapse:collapse;margin:.5rem 0}"
         "td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}"
         "th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5rem 0}"
         "h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin:.8rem 0 .4rem}"
         "summary h2,summary h3{display:inline-block;border:0;margin:.5rem 0}"
         "summary{cursor:pointer}.verdict{font-size:1.05rem;font-weight:600}"
         ".where{font-size:.85rem;color:#555}.warning{color:#a33}"
         "img.lead{max-height:18rem;width:auto}#summary{font-size:.85rem}")


def _page(title: str, parts: list[str], skipped: list[str]) -> str:
    """One self-contained HTML page: no network fetches, plots embedded as PNG."""
    if skipped:
        parts = [*parts, "<p>Plots skipped: " + html.escape("; ".join(skipped)) + "</p>"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(parts) + "</body></html>")


def _img(ident: str, alt: str, png: bytes, lead: bool = False) -> str:
    data = base64.b64encode(png).decode()
    style = " class='lead'" if lead else ""  # the plot of a first screen: kept short
    return (f"<img id='{ident}'{style} alt='{html.escape(alt)}' "
            f"src='data:image/png;base64,{data}'>")


def _html_sections(doc: dict[str, Any], pngs: dict[str, bytes], prefix: str = "",
                   level: int = 2) -> list[str]:
    """A run's sections: the diagnosis open, every detail below it folded away. Element
    ids start with ``prefix`` (one per run on a compare page)."""
    parts = []
    for i, (title, body, names) in enumerate(sections(doc, "html", f"{prefix}verdict")):
        heading = f"<h{level}>{html.escape(title)}</h{level}>"
        parts.append(f"<section>{heading}" if i == 0 else
                     f"<details><summary>{heading}</summary>")
        parts.append(body)
        parts += [_img(f"plot-{prefix}{name}", PLOTS[name], pngs[name], lead=i == 0)
                  for name in names if name in pngs]
        parts.append("</section>" if i == 0 else "</details>")
    return parts


def to_html(doc: dict[str, Any], pngs: dict[str, bytes], skipped: list[str]) -> str:
    """One self-contained HTML page: no network fetches, plots embedded as PNG."""
    return _page("cmkd-doctor report",
                 [f"<p class='where'>Run directory: <code>{html.escape(doc['run'])}"
                  "</code></p>",
                  *_html_sections(doc, pngs)], skipped)


# -- several runs side by side ----------------------------------------------------------

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


def _signed(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" + (f" ± {se:.2f}" if se else "")


def summary_rows(compared: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison's summary table: its headers and one row of cells per run."""
    headers = ["run", "inputs (teacher → student)", "alignment", "stability (overlap)",
               "gamma (95% interval)", "Regular-KD vs No-KD (± SE)", "best student",
               "best's gain vs Regular-KD (± SE)", "what to do"]
    rows = []
    for run in compared["runs"]:
        s = run["summary"]
        g = s["gamma"]
        rows.append([
            s["label"], f"{s['teacher_inputs']} → {s['student_inputs']}",
            "-" if s["alignment"] is None else
            f"{s['alignment']:.2f} ({'reliable' if s['alignment_reliable'] else 'unreliable'})",
            "-" if s["stability"] is None else
            f"{s['stability']:.2f} ({'stable' if s['stable'] else 'unstable'})",
            ("-" if g is None else f"{g['value']:.2f} ({g['low']:.2f}-{g['high']:.2f})")
            + ("; rows share only the class" if s.get("paired") is False else ""),
            _signed(s["kd_delta"], s["kd_delta_se"]),
            "-" if s["best"] is None else f"{s['best']} ({s['best_student']:.2f} %)",
            _signed(s["gain_vs_regular"], s["gain_vs_regular_se"])
            + ("" if s["gain_vs_none"] is None else f" (vs No-KD {s['gain_vs_none']:+.2f})"),
            s["advice"]])
    return headers, rows


def summary_table(compared: dict[str, Any], fmt: str) -> str:
    """The comparison's summary, one row per run (``md`` or ``html``)."""
    return _table(*summary_rows(compared), fmt, ident="summary")


def compare_plots(compared: dict[str, Any]) -> tuple[dict[str, bytes], list[str]]:
    """The students of every run on one axis (``compare``), and each run's own plots
    under ``<i>-<name>`` (runs counted from 1); the second list names those skipped."""
    made: dict[str, bytes] = {}
    skipped: list[str] = []
    for i, run in enumerate(compared["runs"], 1):
        pngs, missed = plots(run["report"])
        made.update({f"{i}-{name}": data for name, data in pngs.items()})
        skipped += [f"{run['label']}: {why}" for why in missed]
    plt = _pyplot()
    distilled = [run for run in compared["runs"] if run["report"]["students"]]
    if plt is None:
        return made, [*skipped, "compare (matplotlib is not installed: pip install "
                                "'cmkd-doctor[report]')"]
    if not distilled:
        return made, [*skipped, "compare (no run has distill results yet)"]
    made["compare"] = students_plot(
        plt, [(run["label"], run["report"]["students"]["results"]) for run in distilled])
    return made, skipped


def compare_markdown(compared: dict[str, Any], images: dict[str, str],
                     skipped: list[str]) -> str:
    """Markdown of a comparison; ``images`` maps plot keys of :func:`compare_plots` to
    the PNG files written beside it."""
    runs = compared["runs"]
    parts = [f"# cmkd-doctor: {len(runs)} runs compared", "## Summary",
             summary_table(compared, "md")]
    if "compare" in images:
        parts.append(f"![Students by teacher, every run]({images['compare']})")
    for i, run in enumerate(runs, 1):
        own = {name.split("-", 1)[1]: path for name, path in images.items()
               if name.startswith(f"{i}-")}
        parts += [f"## Run {run['label']}\n\nRun directory: `{run['report']['run']}`",
                  *_md_sections(run["report"], own, level=3)]
    if skipped:
        parts.append("Plots skipped: " + "; ".join(skipped))
    return "\n\n".join(parts) + "\n"


def compare_html(compared: dict[str, Any], pngs: dict[str, bytes],
                 skipped: list[str]) -> str:
    """One self-contained page: the summary and every run's students on one axis first,
    then each run's diagnosis with its details folded away."""
    runs = compared["runs"]
    parts = [f"<section><h2>Summary</h2>{summary_table(compared, 'html')}"]
    if "compare" in pngs:
        parts.append(_img("plot-compare", "Students by teacher, every run", pngs["compare"],
                          lead=True))
    parts.append("</section>")
    for i, run in enumerate(runs, 1):
        own = {name.split("-", 1)[1]: data for name, data in pngs.items()
               if name.startswith(f"{i}-")}
        parts += [f"<section id='run-{i}'><h2>Run {html.escape(run['label'])}</h2><p "
                  f"class='where'>Run directory: <code>{html.escape(run['report']['run'])}"
                  "</code></p>",
                  *_html_sections(run["report"], own, prefix=f"run-{i}-", level=3),
                  "</section>"]
    return _page(f"cmkd-doctor: {len(runs)} runs compared", parts, skipped)


def plot_reproduction(rows: list[dict[str, Any]], experiment: str, title: str,
                      source: str) -> bytes:
    """Our series (mean ± std over runs) against gamma or alpha, the paper's figures
    marked beside them (hollow markers, or the +2.1 points Fig. 2 states) and the
    official code's (crosses, a rerun at the same seeds), as PNG."""
    plt = _pyplot()
    if plt is None:
        raise InputError("--plot needs matplotlib: pip install 'cmkd-doctor[report]'")
    import io

    axis = "alpha" if experiment == "fig3" else "gamma"
    x = [row[axis] for row in rows]
    series = [k for k in ("regular_teacher", "general_teacher", "random_teacher", "no_kd",
                          "regular_kd", "general_kd", "random_kd") if k in rows[0]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, key in zip(colours * 2, series, strict=False):
        mean = np.array([row[key]["mean"] for row in rows])
        std = np.array([row[key]["std"] for row in rows])
        style = "--" if key.endswith("teacher") else "-"
        ax.plot(x, mean, style, marker="o", color=colour, label=key.replace("_", " "))
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15)
        paper = [(xi, row["paper"][key]) for xi, row in zip(x, rows, strict=True)
                 if key in row["paper"]]
        if paper:
            ax.scatter(*zip(*paper, strict=True), s=90, facecolors="none", edgecolors=colour,
                       linewidths=1.5, zorder=5)
        official = [(xi, row["official"][key]["mean"]) for xi, row in zip(x, rows, strict=True)
                    if key in row.get("official", {})]
        if official:
            ax.scatter(*zip(*official, strict=True), s=40, marker="x", color=colour, zorder=6)
    for xi, row in zip(x, rows, strict=True):
        if "kd_minus_no_kd" in row["paper"]:  # Fig. 2's stated result: KD over No-KD
            target = row["no_kd"]["mean"] + row["paper"]["kd_minus_no_kd"]
            ax.scatter([xi], [target], marker="*", s=160, color="black", zorder=6,
                       label=f"paper: KD {row['paper']['kd_minus_no_kd']:+.1f} over No-KD")
    if any(row["paper"] for row in rows):
        ax.scatter([], [], s=90, facecolors="none", edgecolors="grey", label="paper's figure")
    if any(row.get("official") for row in rows):
        ax.scatter([], [], s=40, marker="x", color="grey", label="official code (rerun)")
    ax.set(xlabel=axis, ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.text(0.01, 0.01, f"ours: mean ± std over runs; source: {source}", fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


FORMATS = ("text", "md", "html", "json")


@dataclass
class Rendered:
    """A report in one format: its document, the text (``None`` for ``text``, which the
    terminal renders from the document), the file written, and the plots skipped."""

    doc: dict[str, Any]
    text: str | None
    written: Path | None
    skipped: list[str]


def render(run_dir: str | Path, fmt: str, out_file: str | Path | None = None) -> Rendered:
    """The report of a run in ``fmt``, written to ``out_file`` when given.

    ``md`` writes its plots as PNG files beside ``out_file`` (or into the run's
    ``report/`` folder); ``html`` embeds them and needs ``out_file``.
    """
    out_file = _check_format(fmt, out_file)

    def into_run(pngs: dict[str, bytes]) -> dict[str, str]:
        with RunDir(run_dir).transaction() as staged:  # the report/ folder lands whole
            return {name: str(staged.public(write_bytes(
                staged.report_dir / f"report_{name}.png", data)))
                for name, data in pngs.items()}

    return _rendered(collect(run_dir), fmt, out_file, plots, to_html, to_markdown,
                     into_run if out_file is None else None)


def render_compare(run_dirs: list[str | Path], fmt: str,
                   out_file: str | Path | None = None) -> Rendered:
    """Several runs side by side (:func:`compare`) in ``fmt``; ``md`` and ``html`` need
    ``out_file`` (``md`` writes its plots beside it)."""
    out_file = _check_format(fmt, out_file)
    if fmt == "md" and out_file is None:
        raise InputError("--compare --format md writes its plots beside the file: give "
                         "--out compare.md")
    return _rendered(compare(run_dirs), fmt, out_file, compare_plots, compare_html,
                     compare_markdown)


def _rendered(doc: dict[str, Any], fmt: str, out_file: Path | None, draw, html_page,
              md_page, place=None) -> Rendered:
    """``doc`` in ``fmt``: ``draw`` makes its plots, ``html_page`` or ``md_page`` lays it
    out; md's plots go beside ``out_file``, or where ``place`` puts them without it."""
    if fmt == "text":
        return Rendered(doc, None, None, [])
    if fmt == "json":
        return _written(doc, json_text(doc), out_file, [])
    pngs, skipped = draw(doc)
    if fmt == "html":
        return _written(doc, html_page(doc, pngs, skipped), out_file, skipped)
    # the plots first: the page that links them is written last
    images = _beside(out_file, pngs) if out_file is not None else place(pngs)
    return _written(doc, md_page(doc, images, skipped), out_file, skipped)


def _check_format(fmt: str, out_file: str | Path | None) -> Path | None:
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "html" and out_file is None:
        raise InputError("--format html writes a file: give --out report.html")
    return None if out_file is None else check_out_file(out_file, "--out")


def _beside(out_file: Path, pngs: dict[str, bytes]) -> dict[str, str]:
    """The plots as PNG files beside ``out_file``, by the names the page links."""
    return {name: write_bytes(out_file.parent / f"{out_file.stem}_{name}.png", data).name
            for name, data in pngs.items()}


def _written(doc: dict[str, Any], text: str, out_file: Path | None,
             skipped: list[str]) -> Rendered:
    written = None if out_file is None else write_text(out_file, text)
    return Rendered(doc, text, written, skipped)
