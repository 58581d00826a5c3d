"""Fixtures shared by the test files: tiny random models saved once per session."""

from __future__ import annotations

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
