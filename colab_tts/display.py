"""Showing results in a notebook: tables, where files go, saving figures.

Kept free of torch so that it imports instantly.
"""

from __future__ import annotations

import contextlib
import html
import os
import sys
from pathlib import Path

OUTPUT_ENV = "COLAB_TTS_OUTPUT_DIR"


def output_dir() -> Path:
    """Where notebooks write audio and plots: $COLAB_TTS_OUTPUT_DIR, else ./outputs (created)."""
    path = Path(os.environ.get(OUTPUT_ENV) or "outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Diverted:
    """A stream that writes to a log file while a ``quiet`` block runs and to the stream it replaced after,
    so a logging handler created inside the block (bound to this object) keeps working once it ends."""

    def __init__(self, log, original):
        self.log, self.original = log, original

    def write(self, text):
        return (self.log if self.log is not None else self.original).write(text)

    def flush(self):
        (self.log if self.log is not None else self.original).flush()

    def isatty(self):
        return False

    def __getattr__(self, name):  # encoding, errors, fileno ...: the stream it replaced answers
        return getattr(self.original, name)


@contextlib.contextmanager
def quiet(log_file):
    """Send everything printed inside the block (Python's and C's stdout and stderr: vLLM's and transformers'
    logs, warnings, progress bars) to ``log_file`` (appended), so a cell shows only what it prints after.

    ``log_file=None`` changes nothing. The file's path is what a cell prints beside the line that matters.
    """
    if log_file is None:
        yield None
        return
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with open(path, "a") as log:
        saved = []
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(log.fileno(), fd)
        except OSError:  # no real descriptors (an embedded interpreter): Python's streams only
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            saved = []
        out, err = _Diverted(log, sys.stdout), _Diverted(log, sys.stderr)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield path
        finally:
            log.flush()
            out.log = err.log = None
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def save_figure(fig, name: str) -> Path:
    """Save a matplotlib figure as PNG under `output_dir()` and return the path."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty file name such as 'catalog' or 'catalog.png'")
    path = output_dir() / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _fmt(value, digits: int) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


class Table:
    """Rows of dicts shown as an HTML table in notebooks and as aligned text elsewhere."""

    def __init__(self, rows, columns=None, title: str | None = None, digits: int = 2):
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = []
            for r in self.rows:
                columns += [c for c in r if c not in columns]
        self.columns = list(columns)
        self.title = title
        self.digits = digits

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def column(self, name):
        return [r.get(name) for r in self.rows]

    def cells(self) -> list[list[str]]:
        return [[_fmt(r.get(c), self.digits) for c in self.columns] for r in self.rows]

    def __str__(self) -> str:
        body = self.cells()
        widths = [max([len(c)] + [len(row[i]) for row in body]) for i, c in enumerate(self.columns)]
        line = lambda cells: "  ".join(s.rjust(w) for s, w in zip(cells, widths)).rstrip()  # noqa: E731
        out = ([self.title] if self.title else []) + [line(self.columns), line(["-" * w for w in widths])]
        return "\n".join(out + [line(row) for row in body])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(s)}</td>" for s in row) + "</tr>" for row in self.cells()
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
