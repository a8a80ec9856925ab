"""--tensorboard: every fitted network's loss curves and the metrics, as event files."""

from __future__ import annotations

# the test extra installs tensorboard: these checks never skip
from tensorboard.backend.event_processing import event_accumulator

from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian


def _tags(folder) -> set[str]:
    found = event_accumulator.EventAccumulator(str(folder))
    found.Reload()
    return set(found.Tags()["scalars"]), found


def test_rank_and_distill_write_their_curves(tmp_path, cli):
    data = tmp_path / "data"
    write_gaussian(make_gaussian(GaussianSpec(n_train=200, n_test=20, seed=2)), data)
    files = [data / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    run, board = tmp_path / "run", tmp_path / "board"
    assert cli("rank", *files, "--out", run, "--epochs", "4", "-M", "2", "-q",
               "--tensorboard", board / "rank").code == 0
    tags, found = _tags(board / "rank")
    assert {"fit 01 align/member 0/train_loss", "fit 01 align/member 0/val_loss",
            "fit 01 align/member 0/kept_epoch", "metrics/aligned f_a test/accuracy",
            "metrics/aligned f_b train/accuracy"} <= tags
    losses = found.Scalars("fit 01 align/member 0/train_loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]  # one point per epoch
    assert cli("distill", "--run", run, "--teacher", "general", "--ratio", "0.5",
               "--seeds", "2", "--epochs", "3", "-q", "--tensorboard", board / "d").code == 0
    tags, found = _tags(board / "d")
    assert any(t.endswith("students/member 5/train_loss") for t in tags)  # 3 rows x 2
    assert {"metrics/teacher general-r0.5/accuracy",
            "metrics/student general r=0.5/accuracy"} <= tags
    assert len(found.Scalars("metrics/student No-KD/accuracy")) == 2  # one per seed


def test_a_refused_command_writes_no_event_file(tmp_path, cli):
    board = tmp_path / "board"
    result = cli("rank", tmp_path / "nope.npy", tmp_path / "b.npy", tmp_path / "y.npy",
                 "--out", tmp_path / "run", "--tensorboard", board)
    assert result.code == 2
    assert not board.exists() or not any(board.rglob("*"))
