"""The report's figures, drawn with matplotlib (the ``report`` extra) as PNG bytes:
salience, spread, students and the ratio sweep of one run (:func:`plots`), the students
of several runs on one axis (:func:`compare_plots`). Without matplotlib each says which
plots it skipped."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from cmkd_doctor.errors import InputError
from cmkd_doctor.report.document import chosen_ratio
from cmkd_doctor.teachers.masks import MFH_ORDER, n_nullified

# one colour per teacher mode, the same in every plot
MODE_COLOURS = {"none": "#8c8c8c", "regular": "#333333", "control": "#937860",
                "general": "#4c72b0", "random": "#dd8452", "specific": "#c44e52"}


CHECKPOINT_COLOUR = "#55a868"  # a teacher from a checkpoint


PLOTS = {
    "salience_sorted": "Salience, channels sorted (Algorithm 1, step 9)",
    "salience_histogram": "Salience histogram",
    "salience_spread": "Spread across repeats of the 20 most salient channels",
    "students": "Students by teacher against No-KD and Regular-KD",
    "sweep": "Student metric against the nullifying ratio r (paper Fig. 5)",
}


def png(plt, fig, dpi: int = 110, **layout: Any) -> bytes:
    """``fig`` as PNG bytes, laid out tight (``layout``: tight_layout's arguments), then
    closed: every figure of the report and of the reproductions is saved here."""
    buffer = io.BytesIO()
    fig.tight_layout(**layout)
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


NO_MATPLOTLIB = "matplotlib is not installed: pip install 'cmkd-doctor[report]'"


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
    if plt is None:  # one reason for every plot: said once
        return {}, [f"{', '.join(PLOTS)} ({NO_MATPLOTLIB})"]

    made: dict[str, bytes] = {}
    skipped: list[str] = []

    def save(name: str, fig) -> None:
        made[name] = png(plt, fig)

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




RUN_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


RUN_LINES = ("--", ":", "-.", (0, (5, 1, 1, 1)))


def student_groups(runs: list[tuple[str | None, list[dict[str, Any]]]]
                   ) -> tuple[list[tuple[str, float, int]], dict[str, float]]:
    """Where each student of :func:`students_plot` goes: the groups along the axis
    (name, start, slots), the baselines and teachers from files first, then one group
    per ratio holding its general, random and specific teachers in that order; and each
    row label's position."""
    def derived(row: dict[str, Any]) -> bool:
        return row["teacher"] in MFH_ORDER and row["ratio"] is not None

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
                starts[f"r = {row['ratio']:g}"] + MFH_ORDER.index(row["teacher"])
                if derived(row) else starts[row["label"]])
    return groups, position


def students_plot(plt, runs: list[tuple[str | None, list[dict[str, Any]]]]) -> bytes:
    """Students by teacher against the baselines, as PNG: a group per ratio with the
    general, random and specific teachers' students side by side in their modes'
    colours (the ordering the hypothesis predicts reads left to right), a group per
    other teacher, and No-KD and Regular-KD as horizontal lines. Several runs share the
    axis, a marker and a line style each (``runs`` holds (label, rows); one run's label
    may be ``None``)."""

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
            if row["teacher"] in ("none", "regular", "control"):  # the levels teachers meet
                ax.axhline(row["student_mean"], ls=style, lw=1,
                           color=MODE_COLOURS[row["teacher"]])
        if label is not None:
            run_handles.append(Line2D([], [], marker=marker, ls=style, color="#555555",
                                      label=f"{label} (lines: its baselines)"))
    ax.set_xticks([start + (width - 1) / 2 for _, start, width in groups],
                  [name for name, _, _ in groups], rotation=20 if len(groups) > 8 else 0,
                  fontsize=8)
    names = {"none": "No-KD (line: its level)", "regular": "Regular-KD (line: its level)",
             "control": "Control: targets as soft, no teacher (line: its level)",
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
    return png(plt, fig)


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
    if plt is None:  # every plot of every run: one line
        return made, [f"every plot ({NO_MATPLOTLIB})"]
    if not distilled:
        return made, [*skipped, "compare (no run has distill results yet)"]
    made["compare"] = students_plot(
        plt, [(run["label"], run["report"]["students"]["results"]) for run in distilled])
    return made, skipped


def plot_reproduction(rows: list[dict[str, Any]], experiment: str, title: str,
                      source: str) -> bytes:
    """Our series (mean ± std over runs) against gamma or alpha, the paper's figures
    marked beside them (hollow markers, or the +2.1 points Fig. 2 states) and the
    official code's (crosses, a rerun at the same seeds), as PNG."""
    plt = _pyplot()
    if plt is None:
        raise InputError("--plot needs matplotlib: pip install 'cmkd-doctor[report]'")

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
    return png(plt, fig, dpi=120, rect=(0, 0.03, 1, 1))
