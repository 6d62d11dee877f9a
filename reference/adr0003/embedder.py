"""ADR-0003's deterministic embedder: the same text always gives the same vector, with no model
weights and no network, so CI is deterministic ("keep in-memory vector store and deterministic
embedder for CI").

A text is a bag of lower-cased words; each word has a fixed pseudo-random direction seeded by
BLAKE2b of (model, dimension, word), and the text's vector is the unit-length sum of its words'
directions. So two texts that share words are close (retrieval by text finds the chunks that use
the query's words), and two models (or two dimensions of one model) give unrelated vectors, as
two real embedding models would: an index built by one is useless to the other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

__all__ = ["DeterministicEmbedder", "words"]

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """The lower-cased alphanumeric words of ``text``, in order (also how documents chunk)."""
    return _WORD.findall(text.lower())


class DeterministicEmbedder:
    """``embed(text)`` -> a tuple of ``dim`` floats of unit length (all zeros for a text with no
    words). Identity is (``model``, ``dim``): a store records both and refuses the other."""

    __slots__ = ("dim", "model")

    def __init__(self, model: str, dim: int) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"DeterministicEmbedder(model={model!r}): give a non-empty model "
                             "name, e.g. 'hash-v1'")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"DeterministicEmbedder(dim={dim!r}): give an int >= 1, e.g. 384")
        self.model = model
        self.dim = dim

    def embed(self, text: str) -> tuple[float, ...]:
        total = np.zeros(self.dim, dtype=np.float64)
        for word in words(text):
            total += _direction(self.model, self.dim, word)
        norm = float(np.linalg.norm(total))
        if norm > 0.0:
            total /= norm
        return tuple(total.tolist())

    def embed_many(self, texts: Iterable[str]) -> list[tuple[float, ...]]:
        return [self.embed(t) for t in texts]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DeterministicEmbedder)
                and (self.model, self.dim) == (other.model, other.dim))

    def __hash__(self) -> int:
        return hash((self.model, self.dim))

    def __repr__(self) -> str:
        return f"DeterministicEmbedder(model={self.model!r}, dim={self.dim})"


@lru_cache(maxsize=65536)
def _direction(model: str, dim: int, word: str) -> np.ndarray:
    # the seed is a hash of everything that names the vector: no process-dependent hash()
    seed = hashlib.blake2b(f"{model}\x1f{dim}\x1f{word}".encode(), digest_size=16).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "little")))
    v = rng.standard_normal(dim)
    v.setflags(write=False)   # cached and shared: nobody may change it
    return v
