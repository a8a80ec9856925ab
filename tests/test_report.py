"""report: every format from a real run, and the HTML page checked in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape

import numpy as np
import pytest

PLOT_IDS = ("salience_sorted", "salience_histogram", "salience_spread", "students", "sweep")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A diagnosed Gaussian run with a ratio sweep (linear networks, 2 seeds: fast)."""
    from cmkd_doctor.cli import main

    out = tmp_path_factory.mktemp("report") / "run"
    code = main(["diagnose", "--example", "gaussian", "--sweep", "--hidden", "0", "--seeds",
                 "2", "-M", "3", "-q", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def reverse(swept):
    """The same data the other way round, b -> a (one ratio), beside ``swept``."""
    from cmkd_doctor.cli import main

    example = swept / "example"
    out = swept.parent / "reverse"
    code = main(["diagnose", str(example / "feats_b.npy"), str(example / "feats_a.npy"),
                 str(example / "labels.npy"), "--hidden", "0", "--seeds", "2", "-M", "3",
                 "-q", "--out", str(out)])
    assert code == 0
    return out


@pytest.mark.slow
def test_json_report_holds_every_section(swept, cli):
    doc = json.loads(cli("report", "--run", swept, "--format", "json").out)
    assert doc["rank"]["command"] == "rank" and len(doc["salience"]["values"]) == 50
    assert len(doc["salience"]["spread_top"]) == 20
    assert {t["name"] for t in doc["teachers"]} >= {"regular", "general-r0.5", "specific-r0.9"}
    assert len(doc["students"]["results"]) == 18 and doc["students"]["verdict"]["text"]
    assert doc["truth"]["shared_channels"] and 0 <= doc["truth"]["precision"] <= 1
    sweep = doc["sweep"]
    assert [p["ratio"] for p in sweep["series"]["general"]] == [0.1, 0.25, 0.5, 0.75, 0.9]
    best = max(sweep["series"]["general"], key=lambda p: p["mean"])
    assert sweep["sweet_spot"] == best["ratio"]


def test_markdown_writes_its_plots_beside_it(swept, cli, tmp_path):
    result = cli("report", "--run", swept, "--format", "md", "--out", tmp_path / "r.md")
    assert result.code == 0, result.err
    text = (tmp_path / "r.md").read_text()
    for name in PLOT_IDS:
        png = tmp_path / f"r_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(r_{name}.png)" in text
    assert "## Students (the paper's Table 4 shape)" in text and "Verdict:" in text


def test_a_folder_where_a_plot_goes_leaves_no_plot_nor_page(swept, cli, tmp_path):
    """Every PNG name is checked before any is written (round two's leftover, issue 38
    item 9): a folder named like the last plot leaves nothing behind."""
    (tmp_path / f"r_{PLOT_IDS[-1]}.png").mkdir()
    result = cli("report", "--run", swept, "--format", "md", "--out", tmp_path / "r.md")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert f"r_{PLOT_IDS[-1]}.png" in result.err and "folder" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"r_{PLOT_IDS[-1]}.png"]


def test_text_report_in_the_terminal(swept, cli):
    result = cli("report", "--run", swept)
    assert result.code == 0, result.err
    for words in ("Salience of modality a", "Truth (generated data)", "Ratio sweep",
                  "salience, sorted:", "sweep general"):
        assert words in result.out


def test_without_matplotlib_the_report_says_which_plots_it_skipped(swept, cli, tmp_path,
                                                                   monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = cli("report", "--run", swept, "--format", "html", "--out", tmp_path / "r.html")
    assert result.code == 0, result.err
    assert "salience_sorted, salience_histogram" in result.err
    assert result.err.count("matplotlib is not installed") == 1  # the hint, said once
    assert "Plots skipped:" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("args,pattern", [
    (["--format", "pdf"], "--format must be one of"),
    (["--format", "html"], "--format html writes a file"),
    (["--run", "{empty}"], "no rank run there"),
])
def test_bad_report_options_exit_2(cli, tmp_path, swept, args, pattern):
    args = [str(tmp_path) if a == "{empty}" else a for a in args]
    result = cli("report", "--run", swept, *args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0]
    assert result.out == ""


@pytest.mark.parametrize("damage", ["empty_json", "truncated_split", "foreign_salience"])
def test_a_damaged_run_directory_exits_2_naming_the_file(cli, tmp_path, swept, damage):
    run = tmp_path / "run"
    shutil.copytree(swept, run)
    if damage == "empty_json":
        (run / "rank.json").write_text("{}")
        named = "rank.json"
    elif damage == "truncated_split":
        data = (run / "split.npz").read_bytes()
        (run / "split.npz").write_bytes(data[: len(data) // 2])
        named = "split.npz"
    else:  # a salience of another run: the checksum in rank.json no longer matches
        np.save(run / "salience.npy", np.ones(50, dtype=np.float32))
        named = "salience.npy"
    for args in (["report", "--run", run], ["distill", "--run", run, "--seeds", "1"],
                 ["derive-teacher", "--run", run]):
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert result.err.startswith("error: ") and named in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_truth_of_generated_data_follows_the_side_it_was_ranked_as(swept, reverse, cli):
    # reverse ranks the example's feats_b.npy as its modality a: its truth is b's
    truth = json.loads((swept / "example" / "truth.json").read_text())
    for run, side in ((swept, "a"), (reverse, "b")):
        doc = json.loads(cli("report", "--run", run, "--format", "json").out)
        assert doc["truth"]["shared_channels"] == truth[f"channels_{side}"]["general"]


def test_compare_puts_both_runs_side_by_side_in_json(swept, reverse, cli):
    doc = json.loads(cli("report", "--compare", swept, reverse, "--format", "json").out)
    assert doc["schema"] == "compare" and [r["label"] for r in doc["runs"]] == ["run",
                                                                               "reverse"]
    for run, path in zip(doc["runs"], (swept, reverse), strict=True):
        own = json.loads(cli("report", "--run", path, "--format", "json").out)
        assert run["report"] == own  # each run's own report, whole
        s, rank, verdict = run["summary"], own["rank"], own["students"]["verdict"]
        best = next(r for r in own["students"]["results"] if r["label"] == verdict["best"])
        assert s["alignment"] == rank["alignment"]["score"]
        assert s["stability"] == rank["stability"]["top_overlap"]
        assert s["gamma"]["value"] == rank["gamma_estimate"]["value"]
        assert s["kd_delta"] == verdict["kd_delta"] and s["best"] == verdict["best"]
        assert s["gain_vs_regular"] == best["delta_vs_regular"]
        assert s["gain_vs_none"] == best["delta_vs_none"]
        assert s["advice"] == verdict["action"]
        assert run["diagnosis"]["verdict"] == verdict["headline"]
    a, b = (r["summary"] for r in doc["runs"])
    assert (a["teacher_inputs"], a["student_inputs"]) == ("feats_a.npy", "feats_b.npy")
    assert (b["teacher_inputs"], b["student_inputs"]) == ("feats_b.npy", "feats_a.npy")


@pytest.mark.slow
def test_compare_in_the_terminal_and_in_markdown(swept, reverse, cli, tmp_path):
    text = cli("report", "--compare", swept, reverse)
    assert text.code == 0, text.err
    doc = json.loads(cli("report", "--compare", swept, reverse, "--format", "json").out)
    table, _, rest = text.out.partition("Run run")
    assert "2 runs compared" in table
    flowing = " ".join(rest.split())  # rich wraps paragraphs at the terminal's width
    for run in doc["runs"]:  # a summary row and the diagnosis of each run
        assert f"│ {run['label']}" in table
        assert run["diagnosis"]["verdict"] in flowing
        assert f"report --run {run['report']['run']}" in flowing
    md = cli("report", "--compare", swept, reverse, "--format", "md", "--out",
             tmp_path / "c.md")
    assert md.code == 0, md.err
    page = (tmp_path / "c.md").read_text()
    assert page.index("## Summary") < page.index("## Run run") < page.index("## Run reverse")
    summary = page[page.index("## Summary"):page.index("## Run run")]
    assert "\n| run | feats_a.npy → feats_b.npy |" in summary
    assert "\n| reverse | feats_b.npy → feats_a.npy |" in summary
    for name in ("compare", "1-students", "1-sweep", "2-students", "2-salience_sorted"):
        png = tmp_path / f"c_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"(c_{name}.png)" in page


def test_compare_with_a_run_not_distilled_yet(swept, reverse, cli, tmp_path):
    ranked = tmp_path / "ranked"
    shutil.copytree(swept, ranked)
    (ranked / "distill.json").unlink()
    result = cli("report", "--compare", ranked, reverse, "--format", "html", "--out",
                 tmp_path / "c.html")
    assert result.code == 0, result.err
    assert "ranked: students (no distill results for this ranking yet)" in result.err
    doc = json.loads(cli("report", "--compare", ranked, reverse, "--format", "json").out)
    first = doc["runs"][0]["summary"]
    assert first["advice"].startswith("not distilled yet") and first["best"] is None
    page = (tmp_path / "c.html").read_text()
    assert "id='plot-compare'" in page and "id='plot-run-1-students'" not in page


def test_students_are_grouped_by_ratio_in_the_order_the_hypothesis_predicts():
    from cmkd_doctor.report.plots import _pyplot, student_groups, students_plot

    def row(teacher, ratio, label, mean):
        return {"teacher": teacher, "ratio": ratio, "label": label, "metric": "accuracy",
                "student_mean": mean, "student_std": 0.5}

    one = [row("none", None, "No-KD", 70), row("regular", None, "Regular-KD", 71),
           *(row(m, r, f"{m} r={r:g}", 72) for r in (0.5, 0.25)
             for m in ("specific", "general", "random")),
           row("ckpt/t.safetensors", None, "t.safetensors", 69)]
    other = [row("none", None, "No-KD", 80), row("general", 0.9, "general r=0.9", 81)]
    groups, at = student_groups([("one", one), ("other", other)])
    assert [name for name, _, _ in groups] == ["No-KD", "Regular-KD", "t.safetensors",
                                               "r = 0.25", "r = 0.5", "r = 0.9"]
    for r in ("0.25", "0.5"):  # general, random, specific side by side, left to right
        assert at[f"random r={r}"] - at[f"general r={r}"] == 1
        assert at[f"specific r={r}"] - at[f"random r={r}"] == 1
    starts = [start for _, start, _ in groups]
    assert starts == sorted(starts) and at["general r=0.9"] == starts[-1]
    assert students_plot(_pyplot(), [("one", one), ("other", other)])[:4] == b"\x89PNG"


def test_runs_are_labelled_by_the_shortest_path_tails_that_differ(tmp_path):
    from cmkd_doctor.report import run_labels

    assert run_labels([tmp_path / "x" / "run", tmp_path / "y" / "run"]) == ["x/run", "y/run"]
    assert run_labels([tmp_path / "a2b", tmp_path / "b2a"]) == ["a2b", "b2a"]


@pytest.mark.parametrize("args,pattern", [
    (["--compare", "{swept}"], "--compare needs at least two run directories; got 1"),
    (["--compare", "{swept}", "{swept}/."], "given twice"),
    (["--compare", "{swept}", "{empty}"], "no rank run there"),
    (["--compare", "{swept}", "{reverse}", "--run", "{swept}"], "--run and --compare"),
    (["{swept}"], "unexpected argument"),
    (["--compare", "{swept}", "{reverse}", "--format", "md"], "give --out compare.md"),
    (["--compare", "{swept}", "{reverse}", "--format", "html"], "--format html writes a file"),
])
def test_bad_compare_options_exit_2(cli, tmp_path, swept, reverse, args, pattern):
    names = {"{swept}": str(swept), "{reverse}": str(reverse), "{empty}": str(tmp_path)}
    args = [next((a.replace(k, v) for k, v in names.items() if k in a), a) for a in args]
    result = cli("report", *args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], lines
    assert result.out == "" and list(tmp_path.iterdir()) == []


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """<script>
window.addEventListener('load', () => {
  // the first screen as it opens (where each named element is), then every folded
  // section opened to measure its plots
  const first = IDS.map(id => {
    const r = document.getElementById(id).getBoundingClientRect();
    return id + ':' + Math.round(r.top) + ':' + Math.round(r.bottom);
  });
  first.push('height:' + window.innerHeight + ':0');
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const found = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return i.id + ':' + i.naturalWidth + 'x' + i.naturalHeight + ':' +
           Math.round(r.width) + 'x' + Math.round(r.height);
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = first.join('\\n') + '\\nIMAGES:\\n' + found.join('\\n') +
                    '\\nTEXT:' + document.body.innerText;
  document.body.appendChild(out);
});
</script>"""


def _in_chromium(page, ids: list[str], tmp_path):
    """Open ``page`` at 1280 x 800 in headless Chromium: where the elements ``ids`` are
    on the first screen ({id: (top, bottom)}, and "height"), every image's decoded and
    laid-out size once the details are open, and the page's text."""
    html = page.read_text()
    # self-contained: nothing is fetched from the network
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(html.replace("</body>", PROBE.replace("IDS", json.dumps(ids))
                                   + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,800", "--virtual-time-budget=5000", "--dump-dom",
         probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # the dumped DOM escapes the text it holds (">=" as "&gt;=")
    probe = unescape(re.search(r"<pre id=\"probe\">(.*?)</pre>", done.stdout, re.S).group(1))
    first, rest = probe.split("IMAGES:")
    images, text = rest.split("TEXT:", 1)
    where = {}
    for line in first.strip().splitlines():
        name, top, bottom = line.rsplit(":", 2)
        where[name] = (int(top), int(bottom))
    sizes = {}
    for line in images.strip().splitlines():
        name, natural, shown = line.split(":")
        sizes[name] = (tuple(map(int, natural.split("x"))), tuple(map(int, shown.split("x"))))
    return where, sizes, text


def _decoded(sizes, name):
    natural, shown = sizes[name]  # decoded and laid out with a real size
    return min(natural) > 100 and min(shown) > 100


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian packages chromium and "
                             "chromium-driver; .ci/run installs them)")


@pytest.mark.browser
@needs_chromium
def test_html_report_in_headless_chromium(swept, cli, tmp_path):
    page = tmp_path / "report.html"
    assert cli("report", "--run", swept, "--format", "html", "--out", page).code == 0
    where, sizes, text = _in_chromium(page, ["verdict", "plot-students"], tmp_path)
    # the verdict, and the whole plot that shows it, are on the first screen
    height = where["height"][0]
    assert height >= 600 and 0 < where["verdict"][1] <= height, where
    assert where["plot-students"][1] <= height, where
    for name in PLOT_IDS:
        assert _decoded(sizes, f"plot-{name}"), (name, sizes)
    doc = json.loads(cli("report", "--run", swept, "--format", "json").out)
    for row in doc["students"]["results"]:  # the tables hold the run's numbers
        assert f"{row['student_mean']:.2f} ± {row['student_std']:.2f}" in text
    verdict = doc["students"]["verdict"]
    assert verdict["headline"] in text and verdict["text"][:60] in text
    assert f"r = {doc['sweep']['sweet_spot']:g}" in text


@pytest.mark.browser
@needs_chromium
def test_compare_page_in_headless_chromium(swept, reverse, cli, tmp_path):
    page = tmp_path / "compare.html"
    assert cli("report", "--compare", swept, reverse, "--format", "html", "--out",
               page).code == 0
    where, sizes, text = _in_chromium(page, ["summary", "plot-compare", "run-1-verdict",
                                             "run-2-verdict"], tmp_path)
    # the summary of both runs and the plot of every run's students: the first screen
    height = where["height"][0]
    assert where["summary"][1] <= height and where["plot-compare"][1] <= height, where
    assert where["run-1-verdict"][0] < where["run-2-verdict"][0], where
    assert _decoded(sizes, "plot-compare"), sizes
    for i in (1, 2):  # both runs rendered, with their own plots
        for name in ("students", "salience_sorted", "salience_histogram", "salience_spread"):
            assert _decoded(sizes, f"plot-run-{i}-{name}"), (i, name, sizes)
    assert _decoded(sizes, "plot-run-1-sweep") and "plot-run-2-sweep" not in sizes
    doc = json.loads(cli("report", "--compare", swept, reverse, "--format", "json").out)
    for run in doc["runs"]:
        assert run["diagnosis"]["verdict"] in text and run["summary"]["advice"] in text
        for row in run["report"]["students"]["results"]:
            assert f"{row['student_mean']:.2f} ± {row['student_std']:.2f}" in text


def test_the_report_shows_only_the_rows_of_the_last_calls_options(swept, cli, tmp_path):
    """Rows distilled with another --rho are another experiment: the report shows the rows
    that go with the verdict it prints, and says how many it left out."""
    run = tmp_path / "run"
    shutil.copytree(swept, run)
    before = json.loads(cli("report", "--run", run, "--format", "json").out)["students"]
    assert before["other_options"] == 0 and len(before["results"]) > 3
    found = cli("distill", "--run", run, "--teacher", "general", "--rho", "0.9", "--hidden",
                "0", "--seeds", "2", "-q")
    assert found.code == 0, found.err
    after = json.loads(cli("report", "--run", run, "--format", "json").out)
    rows = after["students"]["results"]
    assert sorted(r["label"] for r in rows) == ["Control", "No-KD", "Regular-KD",
                                                "general r=0.5"]
    assert {r["options"]["rho"] for r in rows} == {0.9}
    assert after["students"]["other_options"] == len(before["results"])
    assert after["sweep"] is None  # the sweep was distilled with rho 0.5
    assert f"{len(before['results'])} rows distilled with other options" in cli(
        "report", "--run", run).out


def test_spread_plots_take_each_restart_less_its_own_baseline(cli, gaussian_dir, tmp_path):
    """With restarts, each restart's networks have their own unpermuted distance; the
    spread across repeats must not include the differences between those baselines."""
    run = tmp_path / "run"
    inputs = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    assert cli("rank", *inputs, "--hidden", "0", "-M", "3", "--restarts", "3", "-q",
               "--out", run).code == 0
    rank = json.loads((run / "rank.json").read_text())
    baselines = rank["unpermuted_distance_per_restart"]
    assert len(baselines) == 3 and np.ptp(baselines) > 0
    assert rank["unpermuted_distance"] == pytest.approx(np.mean(baselines))
    distances = np.load(run / "permuted_distances.npy")
    by_hand = np.hstack([distances[:, 3 * k : 3 * k + 3] - b for k, b in enumerate(baselines)])
    spread = json.loads(cli("report", "--run", run, "--format", "json").out)["salience"]
    scale = by_hand.mean(1).max()
    for channel in spread["spread_top"]:
        i = channel["channel"]
        assert channel["std"] == pytest.approx(by_hand[i].std() / scale, rel=1e-6)
        assert channel["mean"] == pytest.approx(by_hand[i].mean() / scale, rel=1e-6)
    assert rank["permuted_distance"]["std"] == pytest.approx(by_hand.std(1).tolist())
