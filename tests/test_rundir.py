"""The run folder guard (ppo_bridge.rundir) shared by the trainers' CLIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppo_bridge.rundir import RunDirError, check_run_dir, holds_run

MARKERS = ("checkpoint.pt", "progress.csv")


def test_new_folder_is_fine_and_not_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert check_run_dir(out, resume=False, overwrite=False, markers=MARKERS) == out
    assert not out.exists()  # a rejected or not-yet-started run leaves nothing behind


def test_existing_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    (tmp_path / "progress.csv").write_text("x\n")
    assert holds_run(tmp_path, MARKERS)
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        check_run_dir(tmp_path, resume=False, overwrite=False, markers=MARKERS)
    check_run_dir(tmp_path, resume=True, overwrite=False, markers=MARKERS)
    check_run_dir(tmp_path, resume=False, overwrite=True, markers=MARKERS)
    with pytest.raises(RunDirError, match="exclude each other"):
        check_run_dir(tmp_path, resume=True, overwrite=True, markers=MARKERS)
    with pytest.raises(RunDirError, match="pass --overwrite") as err:  # a trainer without --resume
        check_run_dir(tmp_path, resume=False, overwrite=False, markers=MARKERS, resumable=False)
    assert "--resume" not in str(err.value)


def test_folder_without_a_run_is_fine(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    assert not holds_run(tmp_path, MARKERS)
    check_run_dir(tmp_path, resume=False, overwrite=False, markers=MARKERS)


def test_file_and_path_under_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(f, resume=False, overwrite=False, markers=MARKERS)
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(f / "run", resume=False, overwrite=False, markers=MARKERS)


def test_read_only_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores permission bits, so fake what access(2) says on a read-only mount
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(RunDirError, match="not writable"):
        check_run_dir(tmp_path / "run", resume=False, overwrite=False, markers=MARKERS)
