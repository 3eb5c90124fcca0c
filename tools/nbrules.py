"""Rules every notebook keeps, checked on its source (tools/nbtemplate.py) and on its executed copy
(notebooks/conftest.py under nbval, tools/run_notebooks.py under `make run`):

- every output fits a screen: a cell prints at most ``MAX_LINES`` lines and ``MAX_CHARS`` characters;
- no markdown inside code cells (headings or prose paragraphs written as comments);
- test markers are cell tags (``nbval-check-output``), not comments a reader sees;
- a number typed in a markdown cell appears (rounded) in an output of the same notebook or sits beside
  its citation.
"""

from __future__ import annotations

import re

MAX_LINES = 40
MAX_CHARS = 4000
CHECK_TAG = "nbval-check-output"
_MARKERS = re.compile(r"^\s*#\s*(NBVAL_[A-Z_]+|PYTEST_VALIDATE_IGNORE_OUTPUT)\s*$", re.M)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def visible_text(outputs) -> str:
    """The text a reader sees under a cell: streams, tracebacks and plain-text results (not images)."""
    text = ""
    for out in outputs or []:
        kind = out.get("output_type")
        if kind == "stream":  # nbval keeps stream chunks apart: join them as the reader sees them
            text += _text(out.get("text"))
            continue
        if kind == "error":
            part = "\n".join(out.get("traceback", []))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            part = "" if any(k.startswith("image/") for k in data) else _text(data.get("text/plain"))
        else:
            continue
        if part:
            text += ("\n" if text and not text.endswith("\n") else "") + part.rstrip("\n") + "\n"
    return text


def output_problem(outputs, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> str | None:
    """Why a cell's output does not fit a screen, or None. The fix: send logs to a file, print the line
    that matters (``colab_tts.display.quiet``), or show a table's head."""
    text = visible_text(outputs)
    lines = text.count("\n")
    if lines > max_lines or len(text) > max_chars:
        return (f"prints {lines} lines / {len(text):,} characters (at most {max_lines} / {max_chars:,}): send "
                f"logs to a file under output_dir() and print the line that matters; it starts {text[:120]!r}")
    return None


# A heading as a comment: "# ## 5. Title", "# **Title**" alone on its line, "# 5. Title".
_MD_HEADING = re.compile(r"^\s*#\s+(?:#{1,6}\s|\*\*[^*]+\*\*:?\s*$|\d+\.\s+[A-Z])")
_MD_PROSE = re.compile(r"^\s*#\s+(What (?:it|this) means|Expect)\b")


def markdown_in_code(source: str) -> str | None:
    """Why a code cell holds markdown (a heading, a blank comment line between paragraphs, a "What it
    means" paragraph) or a visible test marker, or None."""
    if _MARKERS.search(source):
        return (f"the comment {_MARKERS.search(source).group(1)} shows to readers: tag the cell instead "
                f'(# %% tags=["{CHECK_TAG}"])')
    for line in source.splitlines():
        if _MD_HEADING.match(line) or _MD_PROSE.match(line):
            return f"markdown written as a comment in a code cell ({line.strip()!r}): make it a '# %% [markdown]' cell"
        if line.strip() == "#":
            return "a blank '#' line separates comment paragraphs: prose belongs in a '# %% [markdown]' cell"
    return None


# Numbers a reader may type without an output to back them: years, versions, section/cell numbers,
# GPU and model names, ids, and anything inside code spans or links.
# A hyphen after a letter joins a name (Llama-3); after a digit it is a range (60-80), both ends typed numbers.
_NUMBER = re.compile(r"(?<![\w.@#/])(?<![A-Za-z]-)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?=[KMGT]i?B\b|[^\w/]|$)")
_EXCUSED = [
    re.compile(r"`[^`]*`"),  # code: names, arguments, versions
    re.compile(r"\[[^\]]*\]\([^)]*\)|<https?://[^>]*>|https?://\S+"),  # links
    re.compile(r"\b(?:19|20)\d\d(?:-\d\d(?:-\d\d)?)?\b"),  # years and dates
    re.compile(r"\b(?:v|vLLM |vllm |release |version |Python |torch |CUDA |Colab |Llama[- ]?)\d+(?:\.\d+)*\w*", re.I),
    re.compile(r"\d+(?:\.\d+){2,}(?:\.post\d+)?"),  # dotted versions such as 0.25.1 (one dot is a decimal)
    re.compile(r"(?:(?<!#)#(?=\d)|PR |issue |section |sections |cell |notebook |notebooks |step |stage |lines? |Q)\s?\d+(?:\s*(?:and|,|–|-|to)\s*\d+)*",
               re.I),
    re.compile(r"\b(?:T4|L4|A10G|A100|H100|H200|V100|P100|RTX[- ]?\d+\w*|\d{4} ?Ti|GTX[- ]?\d+|A\d{2,4}\w*)(?:-\d+GB)?\b"),
    # model names and units glued to letters (3B, 24kHz, fp16), but not a memory size (24GB: a typed figure)
    re.compile(r"\b\w*\d+(?![KMGT]i?B\b)[A-Za-z]\w*\b"),
    re.compile(r"^\s*#+\s*\d+\s*[.·]", re.M),  # heading numbers ("## 4. ...", "# 02 · ...")
    re.compile(r"\b\d+(?:-| |–)?(?:bit|bits|B)\b"),  # weight formats and sizes in a model's name
    re.compile(r"\(?(?<!not )\bcited\b[^.\n]*"),  # a figure beside its citation ("not cited" is none)
    re.compile(r"\b\d+\s*(?:×|x)\b"),
    re.compile(r"\b(?:CC|compute capability)\s*(?:[≥<>=]+\s*)?\d+\.\d\b"),  # a GPU's compute capability
]


# Sentences, list items, paragraphs, and each row of a table: a citation excuses only its own piece.
_SENTENCE = re.compile(r"(?<=[.;!?])\s+(?=[A-Z(*`\"'])|\n\s*(?:[-*]|\d+\.)\s|\n\s*\n|\n(?=\s*\|)")
_CITATION = re.compile(r"(?<!not )\bcited\b|https?://|@[0-9a-f]{7}|\b(?:PR|issue|PRs|issues)\s*#|\w/\w[\w.-]*#\d|README|datasheet",
                       re.I)


def _words(markdown: str) -> str:
    """The prose whose numbers need an output: sentences with a citation, and excused patterns, removed."""
    markdown = "\n".join(s for s in _SENTENCE.split(markdown) if s and not _CITATION.search(s))  # keeps ^
    for pattern in _EXCUSED:
        markdown = pattern.sub(" ", markdown)
    return markdown


def _shown(outputs_text: str) -> set[str]:
    """Every number in the outputs, as typed and at each coarser rounding (so 47.3 backs "47" and "47.3")."""
    found = set()
    for whole, frac in _NUMBER.findall(outputs_text):
        whole = whole.replace(",", "")
        found.add(whole)
        value = float(f"{whole}.{frac}" if frac else whole)
        for digits in range(len(frac) + 1):
            found.add(f"{value:.{digits}f}")
        for unit in (10, 100, 1000):  # "about 570" for 571.8, "52,400" for 52400: never off by over 5 %
            rounded = round(value / unit) * unit
            if rounded and abs(rounded - value) <= 0.05 * abs(value):
                found.add(str(int(rounded)))
    return found


def unbacked_numbers(nb, small: int = 10) -> list[tuple[int, str]]:
    """(cell index, number) for each number typed in markdown that no output of the notebook shows (rounded)
    and that no citation, version, year or name excuses. Numbers below ``small`` are counts in prose."""
    outputs = "\n".join(visible_text(c.get("outputs")) for c in nb.cells if c.get("cell_type") == "code")
    shown = _shown(outputs)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "markdown":
            continue
        for whole, frac in _NUMBER.findall(_words(_text(cell.get("source")))):
            typed = whole.replace(",", "") + (f".{frac}" if frac else "")
            if float(typed) < small and not frac:
                continue
            if typed not in shown:
                problems.append((i, whole + (f".{frac}" if frac else "")))
    return problems
