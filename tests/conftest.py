"""Fixtures shared by the test files: tiny random models saved once per session."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny import save_tiny


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny GPT-2 folders (policy, reward models, a bare trunk) and prompt files."""
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_world():  # noqa: ANN201 (lm.world.World)
    """The tiny toy world, from lm.world's cache (built there once if missing)."""
    from lm.world import WorldConfig, build_world

    torch.set_num_threads(1)
    return build_world(None, WorldConfig.tiny())


@dataclass
class Done:
    """What a command returned: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]):  # noqa: ANN201
    """`python -m module argv` through its entry point, in this process (faster than a
    subprocess; errors end as they do on the command line)."""

    def run(module: str, argv: list[str]) -> Done:
        code = importlib.import_module(module).main(argv)
        out, err = capfd.readouterr()
        return Done(code, out, err)

    return run
