"""No run destroyed by mistake: classic.train's --out guard, --overwrite, file-system errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from classic import train as train_cli

QUIET = ["--no-progress", "--no-tensorboard"]
TINY = ["--total-timesteps", "512", "--eval-episodes", "2", *QUIET]


def assert_one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished CartPole run with TensorBoard files, copied by each test."""
    run = tmp_path_factory.mktemp("finished") / "run"
    argv = ["--env", "CartPole-v1", "--out", str(run), "--total-timesteps", "512"]
    assert train_cli.main([*argv, "--eval-episodes", "2", "--no-progress"]) == 0
    assert (run / "tb").is_dir()
    return run


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize(
    "argv",
    [
        ["--env", "CartPole-v1", *TINY],
        ["--env", "Pendulum-v1", *TINY],  # another env would have replaced the checkpoint
        ["--env", "CartPole-v1", "--lr", "inf", *TINY],  # would have emptied progress.csv
    ],
)
def test_an_existing_run_is_refused_without_resume_or_overwrite(run, capsys, argv):
    before = snapshot(run)
    code = train_cli.main(["--out", str(run), *argv])
    assert_one_line_error(capsys, code, "already holds a run", "--resume", "--overwrite")
    assert snapshot(run) == before


def test_overwrite_starts_over_and_keeps_other_files(run, capsys):
    (run / "notes.txt").write_text("mine\n")
    code = train_cli.main(["--out", str(run), "--overwrite", "--env", "Pendulum-v1", *TINY])
    assert code == 0, capsys.readouterr().err
    assert not (run / "tb").exists()  # the old run's TensorBoard files went with it
    assert (run / "notes.txt").read_text() == "mine\n"
    assert '"env": "Pendulum-v1"' in (run / "result.json").read_text()
    rows = (run / "progress.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and the new run's one iteration (8 x 256 steps)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--env", "CartPol-v1"], "unknown env id"),
        (["--lr", "inf"], "lr must be a finite number"),
        (["--resume", "--overwrite"], "exclude each other"),
    ],
)
def test_a_rejected_overwrite_keeps_the_old_run(run, capsys, argv, needle):
    before = snapshot(run)
    code = train_cli.main(["--out", str(run), "--overwrite", *argv, *TINY])
    assert_one_line_error(capsys, code, needle)
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--env", "CartPol-v1"], "unknown env id"),
        (["--env", "FrozenLake-v1"], "unsupported observation space"),
        (["--log-std-init", "nan", "--env", "Pendulum-v1"], "log_std_init must be a finite"),
        (["--gamma", "nan"], "gamma must be a finite number"),
        (["--overwrite", "--minibatch-size", "100"], "minibatch"),
    ],
)
def test_a_rejected_run_leaves_no_folder(tmp_path, capsys, argv, needle):
    out = tmp_path / "new" / "run"
    assert_one_line_error(capsys, train_cli.main(["--out", str(out), *argv, *TINY]), needle)
    assert not (tmp_path / "new").exists()


def test_file_system_problems_are_one_line_errors(run, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    code = train_cli.main(["--out", str(a_file), *TINY])
    assert_one_line_error(capsys, code, "is a file")
    code = train_cli.main(["--out", str(a_file / "run"), *TINY])
    assert_one_line_error(capsys, code, "is a file, not a folder")
    code = train_cli.main(["--out", str(a_file), "--resume", *TINY])
    assert_one_line_error(capsys, code, "is a file")
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.pt").mkdir()
    for flags in ([], ["--resume"], ["--overwrite"]):
        code = train_cli.main(["--out", str(run), *flags, *TINY])
        assert_one_line_error(capsys, code, "checkpoint.pt is a folder")
    # root ignores permission bits: fake what access(2) says on a read-only location
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != tmp_path)
    code = train_cli.main(["--out", str(tmp_path / "ro"), *TINY])
    assert_one_line_error(capsys, code, "is not writable")
    assert not (tmp_path / "ro").exists()
