"""Hypothesis searches that the seed alone decides: same seed, same draws, in any process.

Hypothesis (6.1xx, ``hypothesis.internal.conjecture.providers``) sometimes draws a literal
instead of a random value (about one draw in twenty), taken from a pool that mixes its own
constants with literals mined from the source of every "local" module in ``sys.modules``
(``_get_local_constants``; crashgate is local when installed editable, and so is any script
next to it). The pool grows as modules are imported, and any change in it shifts the random
stream of every later draw. So a seeded search drew differently depending on what the process
had imported before it: ``certify json --seed 9`` counted 70 damages at rest, ``--scenario
damage`` alone 71, and a second certify in one process could disagree with the first once the
first had imported the later rows' modules. A certificate's reproduction and its "Regenerate"
command rest on the seed alone deciding, so every search crashgate runs pins the pool empty.

``pinned_constants()`` wraps any Hypothesis run (the model row's state machine);
``seeded_find`` is Hypothesis's ``find`` as the rows use it: a seed, a budget, generate then
shrink, no database, no deadline, no health check.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # Hypothesis is imported only when a search runs
    from hypothesis.strategies import SearchStrategy

__all__ = ["pinned_constants", "seeded_find"]

T = TypeVar("T")


@contextlib.contextmanager
def pinned_constants() -> Iterator[None]:
    """Run the block with Hypothesis's pool of local-module literals pinned to empty (see the
    module docstring), restored after; if this Hypothesis has no such pool, nothing to pin.
    Not thread-safe: it swaps a module global, and crashgate runs one search at a time."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - another Hypothesis layout
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or cache is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    # the cache holds each range's permitted constants, computed from whichever pool was live
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def seeded_find(strategy: SearchStrategy[T], condition: Callable[[T], bool], *, budget: int,
                seed: int) -> T | None:
    """Draw up to ``budget`` values of ``strategy`` (from ``seed``) until ``condition`` holds:
    that value shrunk (Hypothesis's ``find``), or None when none did."""
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"seeded_find budget={budget!r}: give the number of values to draw, "
                         "at least 1")
    try:
        with pinned_constants():
            return find(strategy, condition, random=random.Random(seed),
                        settings=settings(max_examples=budget, database=None, deadline=None,
                                          phases=[Phase.generate, Phase.shrink],
                                          suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        return None
