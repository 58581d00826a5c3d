"""The gold judge: `gold_score`, a programmatic sentiment score in [0, 1] that stands in for
humans, and the word sets it reads."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


POSITIVE = _wordset(
    "good great excellent amazing solid reliable sturdy impressive fantastic lovely superb nice "
    "perfect perfectly love happy pleased recommend worth best"
)
NEGATIVE = _wordset(
    "bad poor terrible awful flimsy disappointing useless mediocre faulty weak noisy horrible "
    "broke regret disappointed disappoints returned waste worst problems complaints"
)
INTENSIFIERS = _wordset("very really extremely incredibly super truly highly")
NEGATORS = _wordset(
    "not never no nothing hardly isn't wasn't don't doesn't didn't won't wouldn't can't"
)
# A negation reaches at most this many words ahead and never past a clause boundary.
NEGATION_WINDOW = 3
CLAUSE_BREAKS = _wordset(". , ! ? ; : but however though although")
EVIDENCE_CAP = 3.0  # positive (and negative) evidence saturates here
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,!?;:]")
_SPECIAL = re.compile(r"<\|[a-z]+\|>")


def gold_score(text: str) -> float:
    """Sentiment of a review response in [0, 1]: the ground truth the reward model imitates.

    Each sentiment word (POSITIVE / NEGATIVE) is evidence of weight 1, or 1.5 right after an
    intensifier ("very good"); a negator up to 3 words before it in the same clause flips its
    polarity ("not good" is negative, "no problems" positive). Each distinct word counts once per
    polarity and each side saturates at 3, so repeating or listing sentiment words earns little.
    With margin m = min(pos, 3) - min(neg, 3), the score is sigmoid(2 m - 0.8): no evidence gives
    0.31 (empty or off-topic text is not rewarded), one plain positive word 0.77, "very good" 0.90,
    two positive words 0.96, one negative word alone 0.06. Finally the score is multiplied by
    min(1, 2 * distinct words / words), so degenerate repetition loops score low.
    Special tokens like <|eos|> are ignored.
    """
    tokens = _WORD.findall(_SPECIAL.sub(" ", text).lower())
    words = [t for t in tokens if t not in CLAUSE_BREAKS]
    evidence: dict[tuple[str, int], float] = {}
    since_negator = NEGATION_WINDOW + 1
    previous = ""
    for token in tokens:
        if token in CLAUSE_BREAKS:
            since_negator, previous = NEGATION_WINDOW + 1, ""
            continue
        since_negator += 1
        polarity = 1 if token in POSITIVE else -1 if token in NEGATIVE else 0
        if polarity:
            if since_negator <= NEGATION_WINDOW:
                polarity = -polarity
            weight = 1.5 if previous in INTENSIFIERS else 1.0
            evidence[token, polarity] = max(evidence.get((token, polarity), 0.0), weight)
        if token in NEGATORS:
            since_negator = 0
        previous = token
    positive = sum(w for (_, p), w in evidence.items() if p > 0)
    negative = sum(w for (_, p), w in evidence.items() if p < 0)
    margin = min(positive, EVIDENCE_CAP) - min(negative, EVIDENCE_CAP)
    score = 1.0 / (1.0 + math.exp(-(2.0 * margin - 0.8)))
    if words:
        score *= min(1.0, 2.0 * len(set(words)) / len(words))
    return score


def gold_scores(texts: Sequence[str]) -> list[float]:
    """`gold_score` of each text."""
    return [gold_score(t) for t in texts]
