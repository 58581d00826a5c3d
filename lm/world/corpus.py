"""The corpus: a random grammar of short product reviews with known sentiment, and the prompts
that open them."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from lm.world.gold import INTENSIFIERS

PRODUCTS: dict[str, tuple[str, ...]] = {
    "phone": ("battery", "screen", "camera", "speaker"),
    "laptop": ("keyboard", "display", "trackpad", "charger"),
    "blender": ("motor", "jar", "lid", "blade"),
    "headset": ("microphone", "sound", "headband", "cable"),
    "coffee maker": ("carafe", "filter", "timer", "heater"),
    "backpack": ("zipper", "strap", "fabric", "lining"),
    "vacuum": ("suction", "filter", "hose", "brush"),
    "kettle": ("handle", "lid", "switch", "spout"),
    "jacket": ("hood", "zipper", "collar", "lining"),
    "desk lamp": ("bulb", "base", "arm", "switch"),
    "watch": ("strap", "display", "battery", "clasp"),
    "mouse": ("wheel", "sensor", "cable", "grip"),
}
DURATIONS = ("a week", "two weeks", "a month", "three months", "a year")
# Prompts end at a word boundary, carry no sentiment, and fix the grammatical slot that follows.
PROMPTS_ADJ = (
    "The {aspect} of this {product} is",
    "The {aspect} on my new {product} is",
    "I think the {aspect} of this {product} is",
    "Overall, this {product} is",
    "For the price, this {product} is",
)
PROMPTS_CLAUSE = (
    "I bought this {product} and",
    "I have used this {product} for {duration} and",
    "We got this {product} as a gift and",
    "My old {product} died, so I ordered this one and",
)
PROMPTS_SENTENCE = ("Review of the {product}:", "A quick note about this {product}.")

ADJECTIVES = {
    1: ("good", "great", "excellent", "amazing", "solid", "reliable", "sturdy", "impressive",
        "fantastic", "lovely", "superb", "nice"),
    -1: ("bad", "poor", "terrible", "awful", "flimsy", "disappointing", "useless", "mediocre",
         "faulty", "weak", "noisy", "horrible"),
}  # fmt: skip
# "not <adjective>" reads naturally only for some adjectives; it flips the polarity.
NEGATABLE = {1: ("bad", "terrible", "awful", "disappointing"), -1: ("good", "great", "reliable")}
CLAUSES = {
    1: ("it works {perfectly}", "I love it", "I am {happy} with it", "the {aspect} is {adj}",
        "it has been {adj} so far", "I have had no problems", "it never disappoints"),
    -1: ("it broke after {duration}", "I regret it", "I am {disappointed}", "the {aspect} is {adj}",
         "it has been {adj} so far", "I returned it after {duration}", "I had problems with it"),
}  # fmt: skip
FOLLOW_UPS = {
    1: ("The {aspect} is {adj}.", "I would {highly}recommend it.", "Worth every penny.",
        "I love it.", "No complaints so far.", "Best {product} I have owned.", "{Very} happy."),
    -1: ("The {aspect} is {adj}.", "I would not recommend it.", "Not worth the money.",
         "I returned it.", "What a waste of money.", "Worst {product} I have owned.",
         "{Very} disappointed."),
}  # fmt: skip
NEUTRAL = (
    "It arrived on time.", "I use it every day.", "The box was small.", "Shipping took {n} days.",
    "It comes in {color}.", "My {relative} uses it too.", "I got it on sale.",
)  # fmt: skip
ADVERBS = sorted(INTENSIFIERS - {"highly"})  # "highly" only goes with "recommend"
COLORS = ("black", "white", "grey", "blue", "red")
RELATIVES = ("wife", "husband", "son", "daughter", "friend")
SENTIMENTS = ("positive", "negative", "mixed")


@dataclass(frozen=True)
class Review:
    prompt: str
    response: str  # starts with a space: prompt + response is the full text
    sentiment: str  # "positive", "negative" or "mixed"


def all_prompts() -> list[str]:
    """Every prompt the grammar can open a review with, in a fixed order."""
    prompts = []
    for product, aspects in PRODUCTS.items():
        for template in PROMPTS_ADJ + PROMPTS_CLAUSE + PROMPTS_SENTENCE:
            prompts += sorted(
                {
                    template.format(product=product, aspect=aspect, duration=duration)
                    for aspect in aspects
                    for duration in DURATIONS
                }
            )
    return prompts


class _ReviewWriter:
    """Samples the continuation of a prompt with a given polarity (+1, -1, or mixed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def intensifier(self, p: float = 0.4) -> str:
        """An adverb and a space with probability p, else nothing."""
        return self.rng.choice(ADVERBS) + " " if self.rng.random() < p else ""

    def adjective(self, polarity: int) -> str:
        """An adjective phrase: "good", "really awful", "not bad", "solid and nice"."""
        r = self.rng.random()
        if r < 0.15:
            return "not " + self.rng.choice(NEGATABLE[polarity])
        if r < 0.3:
            first, second = self.rng.sample(ADJECTIVES[polarity], 2)
            return f"{first} and {second}"
        return self.intensifier() + self.rng.choice(ADJECTIVES[polarity])

    def fill(self, template: str, polarity: int, product: str, aspect: str) -> str:
        """Format `template`, sampling only the fields it names (so the RNG stream stays lean)."""
        rng = self.rng
        fields = {
            "aspect": lambda: aspect,
            "product": lambda: product,
            "adj": lambda: self.adjective(polarity),
            "duration": lambda: rng.choice(DURATIONS),
            "perfectly": lambda: rng.choice(("perfectly", "great", "really great")),
            "happy": lambda: self.intensifier() + rng.choice(("happy", "pleased")),
            "disappointed": lambda: self.intensifier() + "disappointed",
            "highly": lambda: "highly " if rng.random() < 0.5 else "",
            "Very": lambda: self.intensifier(p=1.0).strip().capitalize(),
            "n": lambda: rng.choice(("two", "three", "four", "five")),
            "color": lambda: rng.choice(COLORS),
            "relative": lambda: rng.choice(RELATIVES),
        }
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        return template.format(**{name: fields[name]() for name in names})

    def opening(self, slot: str, polarity: int, product: str, aspect: str) -> str:
        """The words that fill the prompt's slot, without final punctuation."""
        if slot == "adj":
            return " " + self.adjective(polarity)
        clause = self.fill(self.rng.choice(CLAUSES[polarity]), polarity, product, aspect)
        return " " + (clause[0].upper() + clause[1:] if slot == "sentence" else clause)

    def response(self, slot: str, sentiment: str, product: str, aspect: str) -> str:
        """An opening that fills the prompt's slot, then 0-2 sentences that agree with it (or, in a
        mixed review, a contrast: ", but the lid is flimsy"), and maybe a neutral remark."""
        others = [a for a in PRODUCTS[product] if a != aspect]
        if sentiment == "mixed":
            first = self.rng.choice((1, -1))
            text = self.opening(slot, first, product, aspect)
            text += ", but " + self.fill(
                "the {aspect} is {adj}", -first, product, self.rng.choice(others)
            )
            sentences = []
        else:
            polarity = 1 if sentiment == "positive" else -1
            text = self.opening(slot, polarity, product, aspect)
            n_follow = self.rng.choice((0, 1, 1, 2))
            templates = self.rng.sample(FOLLOW_UPS[polarity], n_follow)
            sentences = [
                self.fill(t, polarity, product, self.rng.choice(others)) for t in templates
            ]
        if self.rng.random() < 0.3:
            sentences.append(self.fill(self.rng.choice(NEUTRAL), 0, product, aspect))
        self.rng.shuffle(sentences)
        return text + "." + "".join(" " + s for s in sentences)


def make_corpus(n_texts: int, mix: Sequence[float], seed: int) -> list[Review]:
    """`n_texts` reviews over all prompts, with sentiment drawn from `mix` (see `SENTIMENTS`)."""
    rng = random.Random(seed)
    writer = _ReviewWriter(rng)
    slots = [("adj", t) for t in PROMPTS_ADJ] + [("clause", t) for t in PROMPTS_CLAUSE]
    slots += [("sentence", t) for t in PROMPTS_SENTENCE]
    reviews = []
    for _ in range(n_texts):
        product = rng.choice(sorted(PRODUCTS))
        aspect = rng.choice(PRODUCTS[product])
        slot, template = rng.choice(slots)
        prompt = template.format(product=product, aspect=aspect, duration=rng.choice(DURATIONS))
        sentiment = rng.choices(SENTIMENTS, weights=mix)[0]
        reviews.append(Review(prompt, writer.response(slot, sentiment, product, aspect), sentiment))
    return reviews
