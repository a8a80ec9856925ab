"""Every table and summary the commands print, in one place.

Commands call these with what the library returned; nothing here computes a result.
User text (file names, labels) is printed with markup off, so ``feats_a.npy:x`` stays
as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from cmkd_doctor.cli._common import line, out, spark

if TYPE_CHECKING:
    from cmkd_doctor.diagnosis.comparison import Comparison

# the library modules these tables read are imported by the functions that use them:
# 'examples list' renders here and starts without torch


def _fmt(metrics: dict | None) -> str:
    if not metrics:
        return "-"
    return f"{100 * next(iter(metrics.values())):.2f}"


def rank_summary(document: dict, salience: Any, out_dir: Path) -> None:
    """Aligned accuracies, top and bottom channels and a salience histogram."""
    import numpy as np  # imported where used: the CLI's help reads this module

    aligned = document["aligned"]
    metric = next(iter((aligned["metrics"]["a"]["train"] or {}).keys()), "accuracy")
    table = Table(title=f"Aligned networks, {metric} (%)", title_justify="left")
    table.add_column("network")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    for side in ("a", "b"):
        m = aligned["metrics"][side]
        table.add_row(f"f{'1' if side == 'a' else '2'} on modality {side}",
                      _fmt(m["train"]), _fmt(m["test"]))
    out.print(table)
    line(f"epochs: {aligned['epochs_run']} run, best {aligned['best_epoch']};  "
         f"unpermuted distance {document['unpermuted_distance']:.4g};  "
         f"rows permuted: {document['permuted_rows']}")
    constant = document.get("constant_channels", [])
    from cmkd_doctor.ranking.run import channel_order

    order = channel_order(salience, constant)
    informative = order[: len(order) - len(constant)]
    k = min(10, len(informative))
    mod = document["permuted_modality"]
    top = ", ".join(f"{i} ({salience[i]:.2f})" for i in informative[:k])
    bottom = ", ".join(f"{i} ({salience[i]:.2f})"
                       for i in informative[::-1][:min(5, len(informative))])
    line(f"most modality-general channels of {mod}:  {top}")
    line(f"least:  {bottom}" + (f";  constant on the fit rows (last): {len(constant)}"
                                if constant else ""))
    from cmkd_doctor.ranking.findings import check_ranking
    from cmkd_doctor.wording import all_said

    for text in all_said(check_ranking(document, salience), "line"):
        line(text)
    counts, _ = np.histogram(np.clip(salience, 0, 1), bins=10, range=(0, 1))
    line(f"salience histogram  0 |{spark(counts, low=0)}| 1   (bins of 0.1; counts "
         f"{counts.tolist()})")
    t = document["timings"]
    line(f"time: train {t['train_s']:.1f} s, permute {t['permute_s']:.1f} s;  "
         f"wrote {out_dir}/salience.npy and rank.json")


BASELINE_LABELS = {"none": "No-KD", "regular": "Regular-KD", "control": "Control"}


def comparison(report: Comparison) -> None:
    """The comparison in the shape of the paper's Table 4, then the verdict."""
    metric = report.metric
    counts = sorted({len(row.student_runs) for row in report.rows})
    uneven = len(counts) > 1  # --seeds auto gave some rows more: a column says how many
    seeds = f"{counts[0]}-{counts[-1]} seeds by row" if uneven else f"{counts[0]} seeds"
    table = Table(title=escape(f"Crossmodal KD on {report.run} ({metric} %, test rows, "
                               f"{seeds})"), title_justify="left")
    against = [BASELINE_LABELS[name] for name in report.versus(report.rows[0])]
    for name, justify in (("teacher", "left"), ("teacher " + metric, "right"),
                          ("student " + metric, "right"),
                          *((f"vs {label}", "right") for label in against)) + (
                              (("seeds", "right"),) if uneven else ()):
        table.add_column(name, justify=justify)
    extra = [name for name in report.rows[0].student_metrics if name != metric]
    for name in extra:  # multi-label: macro F1 and mAP beside the headline micro F1
        table.add_column("student " + name, justify="right")
    from cmkd_doctor.diagnosis.comparison import versus_cell

    bracketed = False
    for row in report.rows:
        teacher_metric = "-" if row.teacher_metric is None else f"{row.teacher_metric:.2f}"
        own = len(row.student_runs)
        shown = [None if d is None or (name != "none" and row.teacher == "none") else d
                 for name, d in report.versus(row).items()]  # the verdict's differences
        cells = [versus_cell(None if d is None else d.to_dict(), own) for d in shown]
        bracketed |= any(d is not None and d.seeds < own for d in shown)
        table.add_row(escape(row.label), teacher_metric,
                      f"{row.student_mean:.2f} ± {row.student_std:.2f}", *cells,
                      *([str(own)] if uneven else []),
                      *(f"{sum(row.student_metrics[name]) / own:.2f}" for name in extra))
    out.print(table)
    if "Control" in against:
        line("Control: students taught by soft targets as soft as Regular-KD's that carry "
             "the labels alone (no teacher's knowledge); a row that does not clearly beat "
             "it gains by softer targets, not by what the teacher knows")
    if uneven:
        line(", ".join(f"vs {label}" for label in against) + ": differences seed by seed "
             "over the seeds both rows share" + (" (in brackets where the baseline has "
                                                 "fewer than the row)" if bracketed else ""))
    if report.search:
        s = report.search
        line(f"ratio search: {s['distillations']} general-teacher distillations (coarse "
             f"{', '.join(f'{r:g}' for r in s['coarse'])}; refined "
             f"{', '.join(f'{r:g}' for r in s['refined']) or 'nothing new'}) where a full "
             f"0.05 grid takes {s['full_grid']}; sweet spot r = {s['best_ratio']:g}")
    line("verdict: " + report.verdict["text"])
    if report.verdict.get("action"):
        line(f"do: {report.verdict['action']}")
    advice(report.advice)


def advice(steps: list[dict]) -> None:
    """What to try next: each step's reason, then its command on a line of its own,
    never wrapped, so it can be copied whole."""
    if not steps:
        return
    line("what to try:")
    for step in steps:
        line(f"  - {step['text']}")
        if step["command"]:
            out.print(f"      {step['command']}", markup=False, soft_wrap=True)


def layers(found: list, model: str) -> None:
    """The layers a model offers to --layer, in the order they are computed."""
    table = Table(title=escape(f"Layers of {model} ({len(found)}, in the order computed)"),
                  title_justify="left")
    modules = any(layer.module for layer in found)  # a .pt2 names the module of a node
    for column in ("layer (--layer)", "output shape", "computed by",
                   *(("in module",) if modules else ())):
        table.add_column(column)
    for layer in found:
        shape = "?" if layer.shape is None else " x ".join(
            "?" if d is None else str(d) for d in layer.shape)
        table.add_row(escape(layer.name), shape, escape(layer.kind),
                      *((escape(layer.module or ""),) if modules else ()))
    out.print(table)
    line("the same names go to extract --layer, derive-teacher --model ... --layer and "
         "distill --model ... --layer; a .pt2 also takes a module path")


def derived(found: Any, export: Path | None) -> None:
    """One derived teacher: what was nullified and its test metric."""
    side = found.sidecar
    metric = next(iter(side["metrics"] or {"metric": None}))
    value = found.test_metric
    shown = "-" if value is None else f"{100 * value:.2f}%"
    nullified = side["nullified"]
    listed = ", ".join(map(str, nullified[:20])) + (" ..." if len(nullified) > 20 else "")
    line(f"teacher {side['name']} ({'reused' if found.reused else 'derived'}): "
         f"{side['mode']}, {len(nullified)} of {side['n_channels']} channels of modality "
         f"{side['modality']} nullified ({side['fill']} fill), source {side['source']}"
         f"{', refit' if side['refit'] else ''}")
    if nullified:
        line(f"nullified: {listed}")
    line(f"test {metric}: {shown};  wrote {found.path}" + (f" and {export}" if export else ""))


def diagnosis(found: Any, run_dir: Path) -> None:
    """The whole diagnosis: ranking, truth, comparison, advice."""
    rank_summary(found.rank_document, found.rank.salience, run_dir)
    if found.truth:
        t = found.truth
        from cmkd_doctor.wording import planted

        line(f"truth (generated data): {planted(t)}")
    out.print()
    comparison(found.report)


def report_text(doc: dict) -> None:
    """The Markdown report rendered by rich, with small text plots."""
    from rich.markdown import Markdown

    from cmkd_doctor.report import to_markdown

    out.print(Markdown(to_markdown(doc, {}, [])))
    salience = sorted(doc["salience"]["values"], reverse=True)
    line(f"salience, sorted: |{spark(salience)}|  (1 -> {salience[-1]:.2f})")
    if doc["sweep"]:
        for name, points in doc["sweep"]["series"].items():
            ratios = ", ".join(f"{p['ratio']:g}" for p in points)
            line(f"sweep {name:8s} |{spark([p['mean'] for p in points])}|  r = {ratios}")


def compare_text(compared: dict) -> None:
    """Several runs side by side: the summary table, then each run's diagnosis."""
    from rich.markdown import Markdown

    from cmkd_doctor.report import first_screen, summary_rows

    headers, rows = summary_rows(compared)
    table = Table(title=f"{len(compared['runs'])} runs compared", title_justify="left")
    for header in headers:
        table.add_column(escape(header))
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    out.print(table)
    for run in compared["runs"]:
        out.print(Markdown(f"## Run {run['label']}\n\n"
                           + first_screen(run["report"], "md")))
        line(f"details: cmkd-doctor report --run {run['report']['run']}")


_COLUMNS = {
    "table2": ("regular_teacher", "general_teacher", "random_teacher", "no_kd", "regular_kd",
               "general_kd", "random_kd", "general_kd_minus_regular_kd"),
    "fig2": ("regular_teacher", "no_kd", "regular_kd", "kd_minus_no_kd"),
    "fig3": ("regular_teacher", "no_kd", "regular_kd", "kd_minus_no_kd"),
}
# the figures a user compares with the paper's and the official code's
_KEY_COLUMNS = {"table2": ("general_teacher", "general_kd_minus_regular_kd"),
                "fig2": ("regular_teacher", "kd_minus_no_kd"),
                "fig3": ("regular_teacher", "kd_minus_no_kd")}


def _label(column: str) -> str:
    return column.replace("_minus_", " - ").replace("_", " ")


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def reproduction(result: Any, source: str) -> None:
    """One column per setting: ours (mean±std over runs) for every model, then the key
    figures of the official code (a rerun at the same seeds) and of the paper."""
    from cmkd_doctor.examples.reproduce.gaussian import figure

    doc = result.to_dict()
    name, axis = doc["experiment"], result.experiment.axis
    swap = ", official swap" if doc["official_swap"] else ""
    table = Table(title=f"{doc['title']} (accuracy %, mean±std over {doc['runs']} runs "
                        f"from seed {doc['seed']}; protocol {doc['protocol']}{swap})",
                  title_justify="left")
    table.add_column("")
    for row in doc["rows"]:
        table.add_column(escape(f"{axis} {row[axis]:.2f}\n{row['setting']}"), justify="right")
    for column in _COLUMNS[name]:
        table.add_row(_label(column), *(f"{row[column]['mean']:.2f}±{row[column]['std']:.2f}"
                                        for row in doc["rows"]))
    variant = doc["official_variant"]
    for who in ("official", "paper"):
        table.add_section()
        for column in _KEY_COLUMNS[name]:
            cells = [_shown(figure(row[who], column)) for row in doc["rows"]]
            if any(c != "-" for c in cells) or who == "official":
                label = "official code" if who == "official" else "paper"
                table.add_row(escape(f"{label}: {_label(column)}"), *cells)
    out.print(table)
    for row in doc["rows"]:
        if row["note"]:
            line(f"{axis} {row[axis]:.2f} ({row['setting']}): {row['note']}")
    line(f"paper's claim: {doc['claim']}")
    for text in result.claim_check():
        line(text)
    line(f"student loss: {doc['student_loss']}")
    if not variant:
        line("official code: not rerun on this protocol (use --protocol official)")
    elif doc["official_runs"] is None:
        line(f"official code: no rerun from seed {doc['seed']} (the reruns start at the "
             "official scripts' own seeds: drop --seed)")
    else:
        line(f"official code ({variant}, {doc['official_runs']} runs): "
             f"{doc['official_source']}")
    line(f"paper: {source};  {doc['seconds']:.1f} s")


def avmnist(found: dict) -> None:
    """Table 5's shape: teacher accuracy and audio-student accuracy at rho 0 and 0.5."""
    table = Table(title=escape(f"AV-MNIST, audio student (accuracy %, mean ± std over "
                               f"{found['runs']} seeds; [paper's Table 5])"),
                  title_justify="left")
    for column in ("", "teacher", "student, rho = 0", "student, rho = 0.5"):
        table.add_column(column, justify="right" if column else "left")
    labels = {"no_kd": "No-KD", "um_kd": "UM-KD (audio teacher)",
              "cm_kd": "CM-KD (image + audio teacher)"}
    for row in found["rows"]:
        paper = row["paper"]
        teacher = "-" if row["teacher"] is None else (
            f"{row['teacher']:.2f} [{paper['teacher']:.2f}]")
        cells = [f"{row[r]['mean']:.2f} ± {row[r]['std']:.2f} "
                 f"[{paper[r]['mean']:.2f} ± {paper[r]['std']:.2f}]"
                 for r in ("rho_0", "rho_0.5")]
        table.add_row(labels[row["row"]], escape(teacher), *map(escape, cells))
    out.print(table)
    line(f"paper's claim: {found['claim']}")
    by = {row["row"]: row for row in found["rows"]}
    for rho, gap in found["claim_check"].items():
        said = "clearly better: the claim fails" if not gap["holds"] else \
            "not clearly better: the claim holds"
        line(f"{rho.replace('_', ' = ')}: CM-KD - UM-KD student {gap['delta']:+.2f} ± "
             f"{gap['se']:.2f} (paired SE over {gap['seeds']} seeds; {said}); teachers "
             f"{by['cm_kd']['teacher']:.1f} vs {by['um_kd']['teacher']:.1f}")
    line(f"source: {found['source']};  {found['seconds']:.1f} s")


def avmnist_networks(found: dict) -> None:
    """AV-MNIST end to end: the network students beside the feature-level diagnose's,
    both verdicts and whether they agree, and the paper's Table 5 for scale."""
    level = found["feature_level"]
    features = {r["label"]: r for r in level["rows"]} if level else {}
    nets = found["networks"]
    table = Table(title=escape(
        f"AV-MNIST with networks: audio cnn3 students of the lenet5 image teacher "
        f"(accuracy %, test rows, mean ± std over {found['runs']} seeds)"),
        title_justify="left")
    for column in ("teacher", "teacher acc.", "network student", "vs No-KD",
                   "feature-level student", "vs No-KD "):
        table.add_column(column, justify="left" if column == "teacher" else "right")
    base = found["rows"][0]["mean"]
    fbase = features["No-KD"]["mean"] if "No-KD" in features else None
    for row in found["rows"]:
        other = features.get(row["label"])
        table.add_row(
            escape(row["label"]), "-" if row["teacher"] is None else f"{row['teacher']:.2f}",
            f"{row['mean']:.2f} ± {row['std']:.2f}",
            "" if row["label"] == "No-KD" else f"{row['mean'] - base:+.2f}",
            "-" if other is None else f"{other['mean']:.2f} ± {other['std']:.2f}",
            "" if other is None or row["label"] == "No-KD" else f"{other['mean'] - fbase:+.2f}")
    out.print(table)
    image, audio = nets["image_teacher"], nets["audio_network"]
    line(f"networks: image teacher {image['architecture']} {image['accuracy']:.1f}% (masked "
         f"after {image['layer']}), audio network {audio['architecture']} "
         f"{audio['accuracy']:.1f}% (ranked at {audio['layer']})")
    for name, part in (("network level", found), ("feature level", level)):
        if part is None:
            continue
        v, r = part["verdict"], part["rank"]
        line(f"{name}: KD {v['kd']} ({v['kd_delta']:+.2f}), MFH ordering "
             f"{v['ordering']}, best {v['best']}; alignment {r['alignment']:.2f}, "
             f"pairing z {r['pairing_z']:.1f}, gamma {r['gamma']:.2f}")
        line(f"  {v['headline']}")
    if found["agreement"] is not None:
        agree = found["agreement"]
        same = [k for k, ok in agree.items() if ok]
        differ = [k for k, ok in agree.items() if not ok]
        line("the two levels agree on " + (", ".join(same) or "nothing")
             + ("" if not differ else "; they differ on " + ", ".join(differ)))
    paper = found["paper"]["table5_rho_0.5"]
    line("paper's Table 5 (rho = 0.5, audio student): No-KD {:.2f} ± {:.2f}, UM-KD "
         "{:.2f} ± {:.2f}, CM-KD {:.2f} ± {:.2f}; {}".format(
             *paper["no_kd"], *paper["um_kd"], *paper["cm_kd"], found["paper"]["note"]))
    phases = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in found["phases"].items())
    line(f"source: {found['source']};  {found['seconds']:.0f} s ({phases})")


def datasets(entries: list) -> None:
    table = Table(title="The paper's datasets", title_justify="left", show_lines=True)
    for column in ("name", "what", "modalities", "licence", "availability", "prepare"):
        table.add_column(column)
    for d in entries:
        table.add_row(*map(escape, (d.name, f"{d.title}: {d.task} ({d.paper})", d.modalities,
                                    d.licence, d.availability, d.prepare)))
    out.print(table)
