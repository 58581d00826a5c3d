"""Data from users' files: prompts for lm.train and preference pairs for lm.dpo, from a .txt /
JSON-lines file, a `save_to_disk` folder or a hub dataset id. Every row is checked before use and
a bad one is named in a one-line ValueError; a dataset loading script is never run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset

PAIR_COLUMNS = ("prompt", "chosen", "rejected")  # trl's explicit-prompt preference columns


def load_prompts(source: str, column: str) -> tuple[list[str], list[str]]:
    """(train prompts, eval prompts) from a .txt file, a `save_to_disk` folder or a dataset id.

    A dataset with a "test" split evaluates on it; otherwise the training prompts are evaluated.
    """
    path = Path(source)
    if path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"--prompts {source} is not UTF-8 text (byte {err.start}): save it as UTF-8"
            ) from None
        except OSError as err:
            raise ValueError(
                f"--prompts {source}: cannot read it ({err.strerror}): pass a readable .txt file"
            ) from None
        lines = [line.strip() for line in text.splitlines()]
        prompts = [line for line in lines if line]
        return prompts, prompts
    import datasets

    refuse_dataset_script(source, "--prompts")
    data = datasets.load_from_disk(source) if path.is_dir() else datasets.load_dataset(source)
    if isinstance(data, datasets.DatasetDict):
        train = data["train"] if "train" in data else next(iter(data.values()))
        test = data.get("test", train)
    else:
        train = test = data
    if column not in train.column_names:
        raise ValueError(
            f"--prompts {source} has no column {column!r} (it has {train.column_names}): "
            "pass --prompt-column"
        )
    out = list(train[column]), list(test[column])
    for split in out:
        bad = next((i for i, p in enumerate(split) if not isinstance(p, str)), None)
        if bad is not None:
            raise ValueError(
                f"--prompts {source} row {bad}: {column!r} is {type(split[bad]).__name__}, not "
                "text: give every prompt as a string"
            )
    return out


def refuse_dataset_script(source: str, flag: str) -> None:
    """A dataset given as a loading script (`x.py`, or a folder holding one) is refused: loading
    data never runs code from it."""
    path = Path(source)
    scripts = [path] if path.suffix == ".py" else sorted(path.glob("*.py")) if path.is_dir() else []
    if scripts:
        raise ValueError(
            f"{flag} {source} is a dataset loading script ({scripts[0].name}): scripts are never "
            "run; pass a data file (.txt, .jsonl), a save_to_disk folder or a hub dataset of data"
        )


def cycle(prompts: list[str], n: int) -> list[str]:
    """The first n prompts of prompts repeated (so a small test split still gives n samples)."""
    if n < 1:
        raise ValueError(f"--eval-samples must be >= 1, got {n}")
    return (prompts * -(-n // max(len(prompts), 1)))[:n]


def load_pairs(source: str) -> tuple[Dataset, Dataset | None]:
    """(train, test or None) pairs from a `save_to_disk` folder, a JSON-lines file (one object
    per line) or a dataset id; a DatasetDict gives its "train" (else first) and "test" splits."""
    import datasets

    refuse_dataset_script(source, "--pairs")
    path = Path(source)
    if path.is_dir():
        try:
            data = datasets.load_from_disk(source)
        except FileNotFoundError as err:
            raise ValueError(f"--pairs {source} is not a folder written by save_to_disk") from err
    elif path.is_file():
        data = datasets.Dataset.from_list(read_json_lines(path))
    elif source.startswith(("/", ".")) or path.suffix in (".json", ".jsonl"):
        raise ValueError(f"--pairs {source}: no such file or folder")
    else:
        data = datasets.load_dataset(source)
    test = None
    if isinstance(data, datasets.DatasetDict):
        test = data.get("test")
        data = data["train"] if "train" in data else next(iter(data.values()))
    for split in (data, test):
        if split is not None:
            check_columns(split, source)
    return data, test


def read_json_lines(path: Path) -> list[dict]:
    """The objects of a JSON-lines file (blank lines skipped); a ValueError names a bad line."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"--pairs {path} is not a UTF-8 text file of JSON lines") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"--pairs {path} line {number} is not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ValueError(f"--pairs {path} line {number} is not a JSON object")
        bad = bad_pair_field(row)
        if bad:
            raise ValueError(f"--pairs {path} line {number}: {bad}")
        rows.append(row)
    if not rows:
        raise ValueError(f"--pairs {path} holds no pairs")
    return rows


def check_columns(pairs: Dataset, source: str) -> None:
    """Refuse pairs without trl's three text columns, or with no preference in them."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.column_names]
    if missing:
        raise ValueError(
            f"--pairs {source} lacks the column(s) {', '.join(missing)} (it has "
            f"{pairs.column_names}): pass pairs with columns prompt, chosen and rejected"
        )
    if len(pairs) == 0:
        raise ValueError(f"--pairs {source} holds no pairs")
    for i, row in enumerate(pairs.select_columns(list(PAIR_COLUMNS))):
        bad = bad_pair_field(row)
        if bad:
            raise ValueError(f"--pairs {source} row {i}: {bad}")
    if list(pairs["chosen"]) == list(pairs["rejected"]):
        raise ValueError(
            f"--pairs {source}: chosen == rejected in every pair, so there is no preference to "
            "learn: check the columns"
        )


def bad_pair_field(row: dict) -> str | None:
    """What is wrong with a pair's row (a missing, null or non-text column), or None."""
    for column in PAIR_COLUMNS:
        if column not in row:
            return f"no {column!r}: every pair needs prompt, chosen and rejected"
        if not isinstance(row[column], str):
            kind = "null" if row[column] is None else type(row[column]).__name__
            return (
                f"{column!r} is {kind}, not text (conversational pairs are not supported): "
                "give every pair three strings"
            )
    return None
