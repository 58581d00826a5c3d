"""The toy world as data for the commands: its prompts, its gold judge and its preference pairs
(with the prompt made explicit, as lm.dpo reads pairs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm.world.build import World
from lm.world.gold import gold_scores

if TYPE_CHECKING:
    from datasets import Dataset


def world_prompts(world: World) -> tuple[list[str], list[str]]:
    """The toy world's (train, test) prompts."""
    import datasets

    prompts = datasets.load_from_disk(str(world.prompts))
    return list(prompts["train"]["prompt"]), list(prompts["test"]["prompt"])


def world_gold(prompts: list[str], responses: list[str]) -> list[float]:
    """The toy world's gold judge, which grades the response (the prompts carry no sentiment)."""
    return list(gold_scores(responses))


def pairs_of_world(world: World) -> tuple[Dataset, Dataset]:
    """The pairs the world's reward model was trained (train) and tested (test) on, with the
    prompt made explicit: the longest world prompt that begins both texts (the world stores
    trl's implicit-prompt format; trl's character-level `extract_prompt` would cut mid-word
    when both responses start alike)."""
    import datasets

    train, test = world_prompts(world)
    prompts = sorted(set(train + test), key=len, reverse=True)

    def explicit(row: dict[str, str]) -> dict[str, str]:
        chosen, rejected = row["chosen"], row["rejected"]
        prompt = next(p for p in prompts if chosen.startswith(p) and rejected.startswith(p))
        return {
            "prompt": prompt,
            "chosen": chosen[len(prompt) :],
            "rejected": rejected[len(prompt) :],
        }

    saved = datasets.load_from_disk(str(world.pairs))
    train_pairs, test_pairs = (
        datasets.Dataset.from_list([explicit(row) for row in saved[split]])
        for split in ("train", "test")
    )
    return train_pairs, test_pairs
