"""Small argument checks shared by the whole package.

Every public function turns bad input into one ValueError/TypeError that names the fix,
instead of letting it surface as a deep traceback from torch or vLLM.
"""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Iterable


def choose(value, options: Iterable[str], what: str, *, normalize=str.lower) -> str:
    """Return the option that `value` names (case-insensitively), or raise listing the options."""
    options = list(options)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, one of: {', '.join(options)} (got {type(value).__name__})")
    by_key = {normalize(o): o for o in options}
    key = normalize(value.strip())
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=1)
    hint = f" Did you mean {by_key[close[0]]!r}?" if close else ""
    raise ValueError(f"Unknown {what} {value!r}.{hint} Known: {', '.join(options)}.")


def positive(value, name: str, *, integer: bool = False, allow_zero: bool = False):
    """Check that `value` is a (whole, where asked) number above zero and return it."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a whole number" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def fraction(value, name: str):
    """Check that `value` lies in (0, 1] and return it as a float."""
    positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must lie in (0, 1] (a fraction of the GPU's memory), got {value!r}")
    return float(value)


def one_line(message) -> str:
    """A message as one line for stderr (a path holding a newline, a multi-line check result)."""
    text = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text.encode("utf-8", "backslashreplace").decode()  # undecodable argv bytes shown, not a crash


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line on stderr and exit code 2, like every other bad input."""

    def _get_values(self, action, arg_strings):
        # Python 3.11's argparse turns "--opt=--" into [] instead of a value: refuse it as a bad argument
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")
