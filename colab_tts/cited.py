"""Figures typed from public sources, each read from ``colab_tts/data/cited/<topic>.json`` with its source.

One home for every typed figure: code and notebooks call ``cited("orpheus.tokens_per_second")`` instead of
typing the number. An entry is ``{"value": ..., "unit": "...", "source": "...", "date": "YYYY-MM-DD"?,
"note": "..."?}``; the source is a URL or ``owner/repo path @commit`` (a public repository file at a
commit). ``tests/test_cited.py`` checks that every entry has one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "cited"
SOURCE_FORMS = (
    re.compile(r"^https?://\S+$"),
    re.compile(r"^[\w.-]+/[\w.-]+ \S+ @[0-9a-f]{7,40}$"),  # owner/repo path/in/repo @commit
)


@dataclass(frozen=True)
class Cited:
    key: str
    value: object
    unit: str
    source: str
    date: str | None = None
    note: str = ""

    def label(self) -> str:
        """How a notebook shows where the figure comes from."""
        return f"cited: {self.source}" + (f" ({self.date})" if self.date else "")

    def __str__(self) -> str:
        return f"{self.value} {self.unit} ({self.label()})"


@cache
def _topic(topic: str) -> dict[str, Cited]:
    path = DATA / f"{topic}.json"
    if not path.exists():
        have = sorted(p.stem for p in DATA.glob("*.json"))
        raise ValueError(f"no cited figures for topic {topic!r}; topics: {have}")
    raw = json.loads(path.read_text())
    return {name: Cited(f"{topic}.{name}", **entry) for name, entry in raw.items() if not name.startswith("_")}


def cited(key: str) -> Cited:
    """The figure ``"topic.name"`` with its unit and source."""
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"a cited figure is named 'topic.name' (e.g. 'orpheus.tokens_per_second'), got {key!r}")
    topic, name = key.split(".", 1)
    entries = _topic(topic)
    if name not in entries:
        raise ValueError(f"no cited figure {key!r}; {topic} has: {sorted(entries)}")
    return entries[name]


def value(key: str):
    """Just the number (or text) of ``cited(key)``."""
    return cited(key).value


def all_cited() -> list[Cited]:
    """Every entry of every topic (what the test walks)."""
    return [c for p in sorted(DATA.glob("*.json")) for c in _topic(p.stem).values()]
