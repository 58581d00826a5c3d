"""Atomic writes for run folders: a reader (or a resume after kill -9) sees the old complete file
or folder or the new complete one, never half of either.

Folder: written under a hidden temporary name beside its final path, then published with one rename
(a new path) or, to replace an existing folder, one atomic exchange (Linux
`renameat2(RENAME_EXCHANGE)`) after which the old folder, now under the temporary name, is deleted.
Where there is no renameat2 (macOS, Windows, old kernels or file systems) the fallback is two
renames, final -> `.NAME.old-*` then temporary -> final; a kill between them leaves no final path
but the old complete folder, which `clean_stale` renames back at the next start. File: written to
`.NAME.tmp-*`, fsynced, then `os.replace`d over the final name.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

# leftovers of a killed write: `.NAME.tmp-*` (being written), `.NAME.del-*` (being deleted),
# `.NAME.old-*` (the fallback's old copy), and `.policy.XXXXXXXX` / `.policy.old` of older versions
LEFTOVER = r"\.({names})\.(tmp-\w+|del-\w+|old(?:-\w+)?|\w{{8}})"
RUN_FILES = r"policy|policy-merged|tb|checkpoint-\d+|checkpoint\.pt|metrics\.csv|progress\.csv"


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it becomes `final` atomically.

    The folder is made by `os.mkdir`, so it gets the usual permissions (umask), not mkdtemp's 0700,
    and its files get the same read/write bits (safetensors writes 0600). Files and folder are
    fsynced before the rename. On an exception the temporary folder is deleted and `final` is left
    as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
    os.mkdir(tmp)
    try:
        try:
            yield tmp
        except Exception as err:
            _raise_if_disk_full(err, final, tmp)
            raise
        mode = tmp.stat().st_mode & 0o666
        for path in tmp.iterdir():
            if path.is_file():
                os.chmod(path, mode)
                fsync(path)
        fsync(tmp)
        if not final.exists():
            os.rename(tmp, final)
        elif exchange(tmp, final):
            delete(tmp)  # the old folder, now under the temporary name
        else:
            old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
            os.rename(final, old)
            os.rename(tmp, final)
            delete(old)
        fsync(final.parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            delete(tmp)


def delete(path: Path) -> None:
    """Delete a folder tree, or a file or link (what an old final path may have been)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is missing."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync(path: Path) -> None:
    """Flush a file or folder to disk (a no-op where a folder cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `final`; once the block has written it, it replaces `final`
    in one `os.replace`. On an exception the temporary file is removed, `final` left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(4)}")
    try:
        try:
            yield tmp
        except Exception as err:
            _raise_if_disk_full(err, final, tmp)
            raise
        fsync(tmp)
        os.replace(tmp, final)
        fsync(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


class DiskFullError(OSError):
    """A write that ran out of space; its message is the one-line CLI error."""


def _raise_if_disk_full(err: Exception, final: Path, tmp: Path) -> None:
    """Turn a failed write into a DiskFullError naming the folder and the space it needed, when
    the disk is what failed (ENOSPC, or a writer's own error with under 1 MiB left: torch.save
    says only "file write failed")."""
    free = shutil.disk_usage(final.parent).free
    if not (isinstance(err, OSError) and err.errno == errno.ENOSPC) and free >= 1 << 20:
        return
    written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) if tmp.is_dir() else 0
    if tmp.is_file():
        written = tmp.stat().st_size
    raise DiskFullError(
        f"no space left to write {final}: it needs more than the {written / 1e6:.2f} MB written "
        f"when the disk filled ({free / 1e6:.2f} MB free in {final.parent}): free space there or "
        "pass another --out"
    ) from None


def remove_folder(path: Path) -> None:
    """Delete a folder in one step as far as readers see: rename it to a stale name, then delete."""
    doomed = path.with_name(f".{path.name}.del-{secrets.token_hex(4)}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def clean_stale(run_dir: Path, names: str = RUN_FILES) -> None:
    """Remove the leftovers of a killed write to a file or folder whose name matches the regex
    `names`; put back an old copy the fallback left (its final path being gone)."""
    if not run_dir.is_dir():
        return
    stale = re.compile(LEFTOVER.format(names=names))
    for path in run_dir.iterdir():
        match = stale.fullmatch(path.name)
        if not match:
            continue
        final = run_dir / match[1]
        if match[2].startswith("old") and not final.exists():
            os.rename(path, final)
        else:
            delete(path)
