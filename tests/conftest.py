from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cmkd_doctor.cli import main
from cmkd_doctor.gaussian import GaussianSpec, make_gaussian, write_gaussian

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def gaussian_dir(tmp_path_factory) -> Path:
    """A small Gaussian example (Eq. 27) on disk, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("gaussian")
    write_gaussian(make_gaussian(GaussianSpec(n_train=600, n_test=200, seed=3)), out)
    return out


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
