"""The report's layout: the document (:mod:`.document`) and its plots (:mod:`.plots`) as
Markdown, one self-contained HTML page (plots embedded, opens offline), or JSON, and the
``report`` command's entry points :func:`render` and :func:`render_compare`. The
findings' sentences come from :mod:`cmkd_doctor.wording`."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmkd_doctor.diagnosis.comparison import versus_cell
from cmkd_doctor.errors import InputError
from cmkd_doctor.io.outputs import DEFAULT_RUN, check_out_file, json_text, write_bytes, write_text
from cmkd_doctor.io.rundir import RunDir
from cmkd_doctor.ranking.findings import check_ranking
from cmkd_doctor.report.document import (
    collect,
    compare,
    diagnosis,
)
from cmkd_doctor.report.plots import PLOTS, compare_plots, plots
from cmkd_doctor.wording import all_said, capitalized, planted, sweet_spot


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


def advice(doc: dict[str, Any], fmt: str) -> str:
    """What to try next, each step with its command (``md`` or ``html``), shown right
    after the first screen's plot."""
    steps = (doc["students"] or {}).get("advice") or []
    if not steps:
        return ""
    if fmt == "md":
        return "**What to try.**\n\n" + "\n".join(
            f"- {step['text']}" + (f"\n\n  ```\n  {step['command']}\n  ```\n"
                                   if step["command"] else "") for step in steps)
    return "<p>What to try:</p><ul class='advice'>" + "".join(
        f"<li>{html.escape(step['text'])}"
        + (f"<pre><code>{html.escape(step['command'])}</code></pre>"
           if step["command"] else "") + "</li>" for step in steps) + "</ul>"


def _students_section(doc: dict[str, Any], fmt: str) -> tuple[str, str, list[str]]:
    """The students' table (the paper's Table 4 shape) with each row against the
    baselines, and the verdict."""
    results = doc["students"]["results"]
    # the control's column where the comparison has a control row (older ones do not)
    against = ["none", "regular"] + (["control"] if any(
        r["teacher"] == "control" for r in results) else [])
    rows = [[r["label"], "-" if r["teacher_metric"] is None else f"{r['teacher_metric']:.2f}",
             f"{r['student_mean']:.2f} ± {r['student_std']:.2f}",
             *("" if name != "none" and r["teacher"] == "none"
               else versus_cell(r.get(f"vs_{name}"), len(r["student_runs"]))
               for name in against),
             len(r["student_runs"])]
            for r in results]
    labels = [{"none": "vs No-KD", "regular": "vs Regular-KD",
               "control": "vs Control"}[name] for name in against]
    verdict = (doc["students"].get("verdict") or {}).get("text", "")
    metric = results[0]["metric"]
    other = doc["students"].get("other_options", 0)
    left_out = (_para(f"{other} rows distilled with other options (another --rho, "
                      "--seeds, --seed, training or fill) are left out: they are another "
                      "experiment; distill.json keeps them.", fmt) if other else "")
    notes = (f"{', '.join(labels)}: differences seed by seed over the seeds both rows share "
             "(in brackets where the baseline has fewer than the row), as the verdict reads "
             "them." + (" Control: students taught by soft targets as soft as Regular-KD's "
                        "that carry the labels alone (a row that does not clearly beat it "
                        "gains by softer targets, not by what its teacher knows)."
                        if "control" in against else ""))
    return ("Students (the paper's Table 4 shape)",
            _table(["teacher", f"teacher {metric}", f"student {metric}", *labels, "seeds"],
                   rows, fmt) + _para(notes, fmt) + _para(f"Verdict: {verdict}", fmt)
            + left_out, [])


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
                    _para(capitalized(planted(t)) + ".", fmt),
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
        out.append(_students_section(doc, fmt))
    if doc["sweep"]:
        s = doc["sweep"]
        out.append(("Ratio sweep", _para(capitalized(sweet_spot(s["sweet_spot"],
                                                                s["sweet_spot_mean"])) + ".",
                                         fmt), ["sweep"]))
    return out


def checks(rank: dict[str, Any], fmt: str) -> str:
    """What the ranking found and how far to trust it: the gamma estimate, pairing,
    chance, groups, alignment, stability, constant and negative channels, each with what
    it means (worded in :mod:`cmkd_doctor.wording`)."""
    return "".join(_para(text, fmt) for text in all_said(check_ranking(rank), "explain"))


def _para(text: str, fmt: str) -> str:
    return f"\n\n{text}\n\n" if fmt == "md" else f"<p>{html.escape(text)}</p>"


def _md_sections(doc: dict[str, Any], images: dict[str, str], level: int = 2) -> list[str]:
    parts = []
    for i, (title, body, names) in enumerate(sections(doc, "md")):
        parts.append(f"{'#' * level} {title}\n\n{body}")
        parts += [f"![{PLOTS[n]}]({images[n]})" for n in names if n in images]
        if i == 0 and advice(doc, "md"):
            parts.append(advice(doc, "md"))
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
        if i == 0:  # under the verdict and its plot
            parts.append(advice(doc, "html"))
        parts.append("</section>" if i == 0 else "</details>")
    return parts


def to_html(doc: dict[str, Any], pngs: dict[str, bytes], skipped: list[str]) -> str:
    """One self-contained HTML page: no network fetches, plots embedded as PNG."""
    return _page("cmkd-doctor report",
                 [f"<p class='where'>Run directory: <code>{html.escape(doc['run'])}"
                  "</code></p>",
                  *_html_sections(doc, pngs)], skipped)


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


FORMATS = ("text", "md", "html", "json")


@dataclass
class Rendered:
    """A report in one format: its document, the text (``None`` for ``text``, which the
    terminal renders from the document), the file written, and the plots skipped."""

    doc: dict[str, Any]
    text: str | None
    written: Path | None
    skipped: list[str]


def report(run_dir: str | Path | None = None, fmt: str = "text",
           out_file: str | Path | None = None, compare_runs: list[str | Path] | None = None,
           runs: list[str | Path] | None = None) -> Rendered:
    """The ``report`` command: one run (``run_dir``, default ``cmkd-out``) or, with
    ``compare_runs``, several side by side, in ``fmt``. ``runs`` are positional run
    directories, which only a comparison takes."""
    if compare_runs is not None:
        if run_dir is not None:
            raise InputError("--run and --compare: give every run to compare after "
                             "--compare (report --compare RUN RUN ...)")
        return render_compare([*compare_runs, *(runs or [])], fmt, out_file)
    if runs:
        raise InputError(f"unexpected argument {str(runs[0])!r}: report one run with "
                         "--run RUN, or several with --compare RUN RUN ...")
    return render(DEFAULT_RUN if run_dir is None else run_dir, fmt, out_file)


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
    """The plots as PNG files beside ``out_file``, by the names the page links; every
    name is checked before any is written (a folder where one goes leaves none)."""
    paths = {name: check_out_file(out_file.parent / f"{out_file.stem}_{name}.png", "--out")
             for name in pngs}
    return {name: write_bytes(paths[name], data).name for name, data in pngs.items()}


def _written(doc: dict[str, Any], text: str, out_file: Path | None,
             skipped: list[str]) -> Rendered:
    written = None if out_file is None else write_text(out_file, text)
    return Rendered(doc, text, written, skipped)

