"""The notebooks are committed clean (no outputs, no execution counts) and each has a fast mode.

Executing them is a separate step: `PPO_BRIDGE_FAST=1 python -m pytest --nbmake notebooks`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path: Path) -> None:
    nb = _load(path)
    assert nb.get("nbformat") == 4, f"{path.name}: not nbformat 4"
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; strip them "
        "(e.g. `jupyter nbconvert --clear-output --inplace`) before committing"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_fast_flag(path: Path) -> None:
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name}: no code cells"
    first = "".join(code[0]["source"])
    assert "PPO_BRIDGE_FAST" in first, f"{path.name}: the first code cell must read PPO_BRIDGE_FAST"
