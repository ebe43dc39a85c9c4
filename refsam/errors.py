"""Exception types shared by the whole package.

`UserError` and its subclasses mean *bad input* (a path, a name, a key or a value the
user can fix): the CLI turns them into exit code 2 and one line of text. Anything else
raised while running is a failure (exit code 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input that the user can fix; the message says what and where."""


class ConfigError(UserError):
    """A configuration file or override is missing, malformed or invalid."""


class DataError(UserError):
    """A raw dataset file or shard is missing or malformed as a whole (fatal)."""


class LockError(UserError):
    """An output root is locked by another live process."""


def did_you_mean(word: str, options: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean '<prefix>x'?)`` for the closest of ``options`` to a mistyped
    ``word`` (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
