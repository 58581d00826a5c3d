"""The run folder guard shared by `classic.train`, `lm.train` and `lm.dpo`.

Checked before any work is done, so that a rejected run leaves nothing behind and a run folder is
never taken over by mistake: `--out` must be a folder that can be created or written, and a folder
that already holds a run (one of `markers` exists in it) is only entered with `--resume` (continue
it) or `--overwrite` (start over).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


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
