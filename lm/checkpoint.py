"""The files of an lm run folder: atomic folders, checkpoint-<iteration>/ bookkeeping, RNG states.

Atomic folder: written under a hidden temporary name beside its final path, then published with one
rename (a new path) or, to replace an existing folder, one atomic exchange (Linux
`renameat2(RENAME_EXCHANGE)`) after which the old folder, now under the temporary name, is deleted.
At every instant the final path holds the old complete folder or the new complete one. Where there
is no renameat2 (macOS, Windows, old kernels or file systems) the fallback is two renames, final ->
`.NAME.old-*` then temporary -> final; a kill between them leaves no final path but the old complete
folder, which `clean_stale` renames back at the next start.

Nothing here loads code from a file: RNG states are tensors and plain types, for
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pickle
import random
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# leftovers of a killed save: `.NAME.tmp-*` (being written), `.NAME.del-*` (being deleted),
# `.NAME.old-*` (the fallback's old copy), and `.policy.XXXXXXXX` / `.policy.old` of older versions
STALE = re.compile(r"\.(policy|tb|checkpoint-\d+)\.(.+)")


def checkpoints(run_dir: Path) -> list[Path]:
    """The `checkpoint-<iteration>` folders of a run, oldest first (each complete: see above)."""
    found = [p for p in run_dir.glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def prune_checkpoints(run_dir: Path, keep: int | None) -> None:
    """Delete all but the newest `keep` checkpoints (None keeps all)."""
    if keep is not None:
        for old in checkpoints(run_dir)[:-keep]:
            remove_folder(old)


def remove_folder(path: Path) -> None:
    """Delete a folder in one step as far as readers see: rename it to a stale name, then delete."""
    doomed = path.with_name(f".{path.name}.del-{secrets.token_hex(4)}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def clean_stale(run_dir: Path) -> None:
    """Remove the temporary folders of a killed save; put back an old copy the fallback left."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        match = STALE.fullmatch(path.name)
        if not match or not path.is_dir():
            continue
        final = run_dir / match[1]
        if match[2].startswith("old") and not final.exists():
            os.rename(path, final)
        else:
            shutil.rmtree(path)


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
        yield tmp
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


def load_plain(path: Path) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain types come back; a file holding anything
    else is refused, never unpickled (a crafted file cannot run code). Errors are one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} holds more than tensors and plain data: refused to load it (it could run code)"
        ) from None
    except (OSError, RuntimeError) as err:
        raise ValueError(f"{path} cannot be read: {str(err).strip().splitlines()[0]}") from None


def rng_state() -> dict[str, Any]:
    """This process's global RNG states (torch CPU and CUDA, python `random`, numpy) as tensors
    and plain types: what `torch.load(weights_only=True)` reads back."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
