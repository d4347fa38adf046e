"""A small deterministic embedder: signed feature hashing of words and character trigrams.

It is a real implementation of the Embedder interface (texts sharing words or word pieces
score higher than unrelated ones), fast and dependency-light, so unit tests and benchmarks
of everything above the model do not need torch.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import TYPE_CHECKING

from memctl.embed.base import ProgressFn
from memctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

_WORD = re.compile(r"\w+")
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5
_EMPTY_FEATURE = "\x00empty"
_VERSION = 1


class HashingEmbedder:
    """Feature hashing of lower-cased word unigrams and character trigrams.

    Each feature is hashed with CRC-32 (stable across processes, unlike ``hash()``); the low
    bits pick a bucket and bit 31 a sign, so colliding features tend to cancel rather than
    add up. Trigrams are taken over each word padded with spaces, so prefixes and suffixes
    count. Empty text maps to a fixed unit vector rather than to zero.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 8:
            raise UsageError(f"the hashing embedder needs dim >= 8, got {dim}")
        self.dim = dim
        self.name = f"memctl/hashing-{dim}"
        descriptor = (
            f"memctl-hashing v{_VERSION}: crc32 signed buckets, dim={dim}, "
            f"word unigrams x{_WORD_WEIGHT}, char trigrams x{_TRIGRAM_WEIGHT}, l2"
        )
        # Not a file hash (there are no weights): a fixed digest of the algorithm, in the
        # same 64-hex form as a real model's so a header can pin it the same way.
        self.weights_sha256 = hashlib.sha256(descriptor.encode()).hexdigest()

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _WORD.findall(text.lower())
        feats: list[tuple[str, float]] = []
        for word in words:
            feats.append(("w:" + word, _WORD_WEIGHT))
            padded = f" {word} "
            feats.extend(
                ("c:" + padded[i : i + 3], _TRIGRAM_WEIGHT) for i in range(len(padded) - 2)
            )
        if not feats:
            feats.append((_EMPTY_FEATURE, 1.0))
        return feats

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done_in_batch = 0
        for row, text in enumerate(texts):
            vec = out[row]
            for feat, weight in self._features(text):
                h = zlib.crc32(feat.encode("utf-8"))
                sign = -1.0 if h & 0x80000000 else 1.0
                vec[h % self.dim] += sign * weight
            norm = float(np.linalg.norm(vec))
            if norm == 0.0:  # every feature cancelled out: fall back to the empty vector
                h = zlib.crc32(_EMPTY_FEATURE.encode())
                vec[h % self.dim] = 1.0
            else:
                vec /= norm
            done_in_batch += 1
            if progress is not None and done_in_batch == batch_size:
                progress(done_in_batch)
                done_in_batch = 0
        if progress is not None and done_in_batch:
            progress(done_in_batch)
        return out
