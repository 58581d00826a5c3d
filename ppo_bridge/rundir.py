"""The run folder guard and start-over shared by `classic.train`, `lm.train` and `lm.dpo`.

Checked before any work is done, so that a rejected run leaves nothing behind and a run folder is
never taken over by mistake: `--out` must be a folder that can be created or written, and a folder
that already holds a run (one of `markers` exists in it) is only entered with `--resume` (continue
it) or `--overwrite` (start over).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ppo_bridge.atomic import clean_stale, delete, remove_folder

LOCK_NAME = ".run.lock"  # held (flock) by the process that owns the run folder; holds its pid


class RunDirError(ValueError):
    """A run folder that cannot be used as asked; its message is the one-line CLI error."""


def holds_run(out: str | os.PathLike[str], markers: Sequence[str]) -> bool:
    """Whether `out` is a folder holding any of the files or folders named in `markers`."""
    out = Path(out)
    return out.is_dir() and any((out / m).exists() for m in markers)


def check_run_dir(
    out: str | os.PathLike[str],
    *,
    resume: bool,
    overwrite: bool,
    markers: Sequence[str],
    resumable: bool = True,
) -> Path:
    """Validate `out` for a new run, a resumed one (`resume`) or a restart (`overwrite`).

    Creates nothing. Raises RunDirError naming the flag or path to change when `out` (or a parent)
    is a file, is not writable, holds a run and neither flag is given, or both flags are given.
    `resumable=False` (a trainer without --resume) leaves --resume out of the advice.
    """
    out = Path(out)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other: pass one of them")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file: pass a folder for the run")
    existing = out
    while not existing.exists():  # the nearest ancestor that exists must be a writable folder
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"--out {out}: {existing} is a file, not a folder: pass another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {out}: {existing} is not writable: pass a writable --out")
    if holds_run(out, markers) and not (resume or overwrite):
        resume_advice = "--resume to continue it, " if resumable else ""
        raise RunDirError(
            f"--out {out} already holds a run: pass {resume_advice}--overwrite to start over, "
            "or another --out"
        )
    return out


def start_over(out: Path, names: Sequence[str]) -> None:
    """--overwrite: delete the previous run's files and folders that match the glob patterns
    `names` (e.g. "checkpoint-*", "tb"), and the leftovers of killed writes; other files stay."""
    clean_stale(out)
    for pattern in names:
        for path in sorted(out.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                remove_folder(path)
            else:
                delete(path)


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Own the run folder `out` (created if needed) while inside: an exclusive `flock` on
    `out/.run.lock`, taken before anything else is written there. A second run into the same
    folder gets a RunDirError naming the holder's pid. The kernel releases the lock when its
    process dies, so a crashed run's lock is stale, and the next run takes it over, saying so."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise RunDirError(
                f"--out {out} is in use by another run (pid {holder}): wait for it to end, or "
                "pass another --out"
            ) from None
        previous = os.read(fd, 32).decode(errors="replace").strip()
        if previous:  # the pid of a run that ended without releasing it: it crashed
            print(
                f"note: {out} was left locked by pid {previous}, which is gone: taking it over",
                file=sys.stderr,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released cleanly: no stale note next time
            if created and [p.name for p in out.iterdir()] == [LOCK_NAME]:
                (out / LOCK_NAME).unlink()  # a run that wrote nothing leaves no folder
                out.rmdir()
    finally:
        os.close(fd)  # also releases the flock
