"""A deterministic synthetic corpus with a realistic shape.

Word frequencies follow Zipf's law over a pseudo-word vocabulary (plus common English function
words, which make up roughly half of real text), record lengths are log-normal around ~300 bytes,
and queries mix frequent and rare words like typed queries do. Same seed, same corpus.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator

FUNCTION_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "was",
    "with",
    "as",
    "i",
    "be",
    "at",
    "by",
    "this",
    "had",
    "not",
    "are",
    "but",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
    "were",
    "her",
    "all",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
]
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "st", "ng", "sh"]


def _vocabulary(n: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        length = rng.choice((2, 2, 3, 3, 3, 4))
        word = "".join(rng.choice(_SYLLABLES) for _ in range(length))
        if word not in words:
            words.add(word)
            out.append(word)
    return out


class Corpus:
    def __init__(self, seed: int = 42, vocab_size: int = 30_000, zipf_s: float = 1.07) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not a secret
        self.vocab = _vocabulary(vocab_size, self.rng)
        weights = [1.0 / (rank**zipf_s) for rank in range(1, vocab_size + 1)]
        self._cum = list(itertools.accumulate(weights))
        self._total = self._cum[-1]

    def _word(self) -> str:
        if self.rng.random() < 0.45:
            return self.rng.choice(FUNCTION_WORDS)
        x = self.rng.random() * self._total
        return self.vocab[bisect.bisect_left(self._cum, x)]

    def text(self, mean_bytes: int = 300) -> str:
        target = max(20, int(self.rng.lognormvariate(math.log(mean_bytes), 0.5)))
        words: list[str] = []
        size = 0
        while size < target:
            w = self._word()
            words.append(w)
            size += len(w) + 1
        words[0] = words[0].capitalize()
        return " ".join(words) + "."

    def records(self, n: int, mean_bytes: int = 300) -> Iterator[dict[str, object]]:
        namespaces = ("personal", "work", "journal", "mail")
        for i in range(n):
            yield {
                "text": self.text(mean_bytes),
                "namespace": namespaces[i % len(namespaces)],
                "tags": [f"t{i % 50}"],
                "observed_at": f"20{20 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z",
            }

    def queries(self, n: int) -> list[str]:
        """Typed-query-like: 2-4 content words drawn from the mid/low frequency range."""
        out = []
        for _ in range(n):
            k = self.rng.choice((2, 3, 3, 4))
            # log-uniform ranks: as many queries about rare words as about common ones
            hi = math.log(len(self.vocab))
            words = [
                self.vocab[int(math.exp(self.rng.uniform(math.log(5), hi))) - 1] for _ in range(k)
            ]
            out.append(" ".join(words))
        return out
