"""Checking the options a backend is opened with (``sqlite?journal_mode=WAL``).

Options arrive as strings (they come from a name on a command line); each backend states the
ones it knows with their allowed values and defaults, and gets back a dict of checked values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from crashgate.backends.errors import BadOption

__all__ = ["Option", "check_options"]


@dataclass(frozen=True)
class Option:
    """One option: its default, and either the allowed values (case-insensitive, normalised to
    the spelling given here) or a converter such as ``int``."""

    default: str
    choices: Sequence[str] | None = None
    convert: Callable[[str], object] | None = None
    help: str = ""


def check_options(backend: str, given: Mapping[str, object], known: Mapping[str, Option]
                  ) -> dict[str, object]:
    """The options with defaults filled in and values checked; ``BadOption`` for anything else."""
    for name in given:
        if name not in known:
            raise BadOption(backend, name, given[name], known_options=known)
    out: dict[str, object] = {}
    for name, option in known.items():
        raw = str(given.get(name, option.default))
        if option.choices is not None:
            match = [c for c in option.choices if c.lower() == raw.lower()]
            if not match:
                raise BadOption(backend, name, raw, option.choices)
            out[name] = match[0]
        elif option.convert is not None:
            try:
                out[name] = option.convert(raw)
            except (TypeError, ValueError):
                raise BadOption(
                    backend, name, raw, [f"a value {option.convert.__name__}() accepts"]
                ) from None
        else:
            out[name] = raw
    return out
