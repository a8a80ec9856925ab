"""Every default is declared once: a command given no options passes the library exactly
its own defaults, and a default the help states in words is the library's."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest

from cmkd_doctor.errors import CmkdError


class Captured(CmkdError):
    """Raised by a stand-in for a library function once it has seen its arguments."""


def _capture(monkeypatch, module, name: str) -> dict:
    seen: dict = {}
    real = getattr(module, name)

    def stand_in(*args, **kwargs):
        seen.update(inspect.signature(real).bind(*args, **kwargs).arguments)
        raise Captured("captured")

    monkeypatch.setattr(module, name, stand_in)
    return seen


def test_distill_passes_the_librarys_defaults(monkeypatch, cli, tmp_path):
    from cmkd_doctor.diagnosis import distill
    from cmkd_doctor.diagnosis.options import DistillOptions

    seen = _capture(monkeypatch, distill, "distill")
    assert cli("distill", "--run", tmp_path).code != 0 and seen
    assert seen["options"] == DistillOptions().checked()
    assert "expect" not in seen or seen["expect"] is None


def test_derive_teacher_passes_the_librarys_defaults(monkeypatch, cli, tmp_path):
    from cmkd_doctor.teachers import derivation
    from cmkd_doctor.teachers.masks import TeacherSpec
    from cmkd_doctor.training.stacked import TrainOptions

    device = inspect.signature(derivation.derive).parameters["device"].default
    seen = _capture(monkeypatch, derivation, "derive")
    assert cli("derive-teacher", "--run", tmp_path).code != 0 and seen
    assert seen["spec"].checked() == TeacherSpec().checked()
    assert seen["train"] == TrainOptions()
    assert seen["device"] == device


def test_diagnose_and_rank_pass_the_librarys_defaults(monkeypatch, cli, tmp_path,
                                                      gaussian_dir):
    from cmkd_doctor.diagnosis import diagnose
    from cmkd_doctor.io import rundir
    from cmkd_doctor.ranking.options import RankOptions

    seen = _capture(monkeypatch, diagnose, "diagnose")
    inputs = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    assert cli("diagnose", *inputs, "--out", tmp_path / "run").code != 0 and seen
    settings = seen["config"]
    assert replace(settings, data=None) == replace(diagnose.DiagnoseConfig(), data=None)
    seen = _capture(monkeypatch, rundir, "rank_files")
    assert cli("rank", *inputs, "--out", tmp_path / "run").code != 0 and seen
    assert seen["options"] == RankOptions()


def _help(cli, command: str) -> str:
    found = cli(command, "--help")
    assert found.code == 0
    return " ".join(found.out.split())  # the help's words, without its line breaks


@pytest.mark.parametrize("command", ["distill", "derive-teacher", "diagnose", "rank"])
def test_defaults_the_help_words_are_the_librarys(cli, command):
    from cmkd_doctor import choices
    from cmkd_doctor.diagnosis.diagnose import DiagnoseConfig
    from cmkd_doctor.io import streaming
    from cmkd_doctor.ranking import run
    from cmkd_doctor.training import engine

    # the code reads the budgets the words are made of
    assert (engine.AUTO_STEPS, engine.AUTO_EPOCHS) == (choices.AUTO_STEPS, choices.AUTO_EPOCHS)
    assert streaming.CHUNK_BYTES == choices.CHUNK_BYTES
    assert streaming.RESIDENT_BYTES_CPU == choices.RESIDENT_BYTES_CPU
    assert run.AUTO_RESTART_FLOP == choices.AUTO_RESTART_FLOP
    text = _help(cli, command)
    assert f"[default: {choices.EPOCHS_DEFAULT}]" in text
    assert f"[default: {choices.CHUNK_ROWS_DEFAULT}]" in text
    if command in ("rank", "diagnose"):
        assert f"[default: {choices.RESTARTS_DEFAULT}]" in text
    if command == "diagnose":
        ratios = ",".join(f"{r:g}" for r in DiagnoseConfig().distill.ratios)
        assert f"or auto [default: {ratios}]" in text
    if command in ("distill", "diagnose"):
        from cmkd_doctor.diagnosis import seed_schedule

        assert f"[default: {seed_schedule.MAX_SEEDS}]" in text
