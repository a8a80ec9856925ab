"""report: every format from a real run, and the HTML page checked in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

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


def test_json_report_holds_every_section(swept, cli):
    doc = json.loads(cli("report", "--run", swept, "--format", "json").out)
    assert doc["rank"]["command"] == "rank" and len(doc["salience"]["values"]) == 50
    assert len(doc["salience"]["spread_top"]) == 20
    assert {t["name"] for t in doc["teachers"]} >= {"regular", "general-r0.5", "specific-r0.9"}
    assert len(doc["students"]["results"]) == 17 and doc["students"]["verdict"]["text"]
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
    assert "note: plot skipped: salience_sorted (matplotlib is not installed" in result.err
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """<script>
window.addEventListener('load', () => {
  // the first screen as it opens, then every folded section opened to measure its plots
  const verdict = document.getElementById('verdict').getBoundingClientRect();
  const plot = document.getElementById('plot-students').getBoundingClientRect();
  const first = 'FIRST:' + Math.round(verdict.bottom) + ':' + Math.round(plot.top) + ':' +
                window.innerHeight;
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const found = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return i.id + ':' + i.naturalWidth + 'x' + i.naturalHeight + ':' +
           Math.round(r.width) + 'x' + Math.round(r.height);
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = first + '\\n' + found.join('\\n') + '\\nTEXT:' +
                    document.body.innerText;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian packages "
                    "chromium and chromium-driver; .ci/run installs them)")
def test_html_report_in_headless_chromium(swept, cli, tmp_path):
    page = tmp_path / "report.html"
    assert cli("report", "--run", swept, "--format", "html", "--out", page).code == 0
    html = page.read_text()
    # self-contained: nothing is fetched from the network
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,800", "--virtual-time-budget=5000", "--dump-dom",
         probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = re.search(r"<pre id=\"probe\">(.*?)</pre>", done.stdout, re.S).group(1)
    first, *images = probe.split("TEXT:")[0].strip().splitlines()
    # the verdict, and the top of the plot that shows it, are on the first screen
    _, verdict_bottom, plot_top, height = first.split(":")
    assert int(height) >= 600 and 0 < int(verdict_bottom) <= int(height), first
    assert int(plot_top) < int(height), first
    sizes = dict(line.split(":", 1) for line in images)
    for name in PLOT_IDS:  # every plot decoded and laid out with a real size
        natural, shown = sizes[f"plot-{name}"].split(":")
        assert min(map(int, natural.split("x"))) > 100, (name, natural)
        assert min(map(int, shown.split("x"))) > 100, (name, shown)
    text = probe.split("TEXT:", 1)[1]
    doc = json.loads(cli("report", "--run", swept, "--format", "json").out)
    for row in doc["students"]["results"]:  # the tables hold the run's numbers
        assert f"{row['student_mean']:.2f} ± {row['student_std']:.2f}" in text
    assert doc["students"]["verdict"]["text"][:60] in text
    assert f"r = {doc['sweep']['sweet_spot']:g}" in text
