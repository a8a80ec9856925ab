from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cmkd_doctor.cli import main
from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
# the examples' files, as their publishers serve them (mnist/, fsdd/, sources/) and
# converted (multiview/): the data root of every test that reads them, unless one is set
SHARED_DATA = ROOT.parent / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("CMKD_DOCTOR_DATA", str(SHARED_DATA))

torch.set_num_threads(2)

# The loop a contributor runs after each change (`python -m pytest`) leaves out the slow
# and browser tests; `python -m pytest --all` (the README's test command, which CI runs)
# and any `-m EXPRESSION` run them too. `-m data` / `-m "not data"` pick the tests that
# read the examples' files (they skip, saying so, where those files are not).
MARKERS = {
    "slow": "trains for more than a few seconds (whole diagnoses, reproductions)",
    "browser": "renders a report in headless Chromium",
    "data": "reads the examples' files under ../shared/data",
}
LEFT_OUT = ("slow", "browser")


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="also run the slow and browser tests (what CI runs)")


def pytest_configure(config):
    for name, what in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(config, items):
    for item in items:  # the tests that read the examples' files, by the fixture they use
        if "avmnist_dir" in getattr(item, "fixturenames", ()):
            item.add_marker("data")
    if config.getoption("run_all") or config.getoption("markexpr"):
        return
    left_out = [i for i in items if any(i.get_closest_marker(m) for m in LEFT_OUT)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        dropped = set(left_out)
        items[:] = [i for i in items if i not in dropped]
        config._cmkd_left_out = len(left_out)


def pytest_terminal_summary(terminalreporter, config):
    left_out = getattr(config, "_cmkd_left_out", 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} slow and browser tests left out: python -m pytest --all runs them "
            "too (as CI does)")


@pytest.fixture(scope="session")
def gaussian_dir(tmp_path_factory) -> Path:
    """A small Gaussian example (Eq. 27) on disk, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("gaussian")
    write_gaussian(make_gaussian(GaussianSpec(n_train=600, n_test=200, seed=3)), out)
    return out


@pytest.fixture(scope="session")
def avmnist_dir() -> Path:
    """AV-MNIST built from the raw MNIST and FSDD files in ../shared/data, as ``examples
    make avmnist`` writes it: the one build the docs' blocks read too (read it only)."""
    mnist, fsdd = SHARED_DATA / "mnist", SHARED_DATA / "fsdd"
    if not (mnist.is_dir() and fsdd.is_dir()):
        pytest.skip(f"the raw MNIST and FSDD files are not at {SHARED_DATA}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import docs  # tools/docs.py

    return docs.avmnist(SHARED_DATA)


class Run:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``cmkd-doctor ARGS`` in-process through its front door, main()."""

    def run(*args: str) -> Run:
        capsys.readouterr()  # only what the command itself prints
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def save(path: Path, array) -> Path:
    np.save(path, array)
    return path


def distill_record(**changes) -> dict:
    """A distill call's options as distill.json records them, at their defaults (the
    rank run's width 256) with ``changes``."""
    import json
    from dataclasses import asdict, replace

    from cmkd_doctor.diagnosis.distill import DistillOptions

    options = replace(DistillOptions(), **changes).checked()
    found = {**asdict(replace(options, train=None)),
             "train": options.train.resolved((256,)).to_dict()}
    return json.loads(json.dumps(found))
