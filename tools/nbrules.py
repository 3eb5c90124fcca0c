"""Rules every notebook keeps, checked on its source (tools/nbtemplate.py) and on its executed copy
(notebooks/conftest.py under nbval, tools/run_notebooks.py under `make run`):

- every output fits a screen: a cell prints at most ``MAX_LINES`` lines and ``MAX_CHARS`` characters;
- no markdown inside code cells (headings or prose paragraphs written as comments);
- test markers are cell tags (``nbval-check-output``), not comments a reader sees;
- a number typed in a markdown cell appears (rounded) in an output of the same notebook or sits beside
  its citation.

What a reader sees under a cell is its streams, tracebacks and results: a result's HTML when it has one (a
table, an audio player: the tags stripped, one line per table row or block), else its plain text; images
are not text. Both the screen limit and the prose check read that.

Which numbers a citation excuses (``_uncited``): a citation (the word *cited*, a URL, a commit ``@abc1234``,
``PR #N``, ``owner/repo#N``, a README or datasheet) excuses only the numbers beside it, not its whole
sentence: inside parentheses, the parenthesis and the clause right before it ("peaks at 8.15 GB on an RTX
4090 (cited: PR #755)"); outside parentheses, its own clause. A clause ends at ``;``, ``:``, a dash, a
parenthesis or the sentence's end (not at a comma, so a list ending in its citation is cited as a whole).
Every other number is checked, small ones too ("3 runs", "8 GB"), except years, versions, section, step and
cell numbers, GPU and model names (T4, RTX 4060, 3B, 4-bit) and a card's memory class ("an 8 GB card": only
the classes of the catalog's cards, ``colab_tts.hardware.memory_classes_gb``). A README or datasheet cites only
when it says whose ("MetaVoice's README"; not "per the README").
"""

from __future__ import annotations

import functools
import html
import re

MAX_LINES = 40
MAX_CHARS = 4000
CHECK_TAG = "nbval-check-output"
_MARKERS = re.compile(r"^\s*#\s*(NBVAL_[A-Z_]+|PYTEST_VALIDATE_IGNORE_OUTPUT)\s*$", re.M)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


_HTML_DROP = re.compile(r"<(script|style|audio|video)\b.*?</\1\s*>", re.S | re.I)
_HTML_PRE = re.compile(r"(<pre\b.*?</pre\s*>)", re.S | re.I)  # keeps its line breaks; elsewhere they are spaces
_HTML_LINE = re.compile(r"<br\s*/?>|</(?:tr|p|div|li|h[1-6]|caption|table|pre|audio|video)\s*>", re.I)
_HTML_CELL = re.compile(r"</t[dh]\s*>", re.I)
_HTML_TAG = re.compile(r"<[^>]*>", re.S)


def html_text(markup: str) -> str:
    """The text an HTML output shows: scripts and styles dropped, whitespace collapsed as a browser does
    (but inside <pre>), one line per table row or block, cells two spaces apart, entities decoded, blank
    lines left out."""
    parts = _HTML_PRE.split(_HTML_DROP.sub("", markup))
    text = "".join(part if i % 2 else re.sub(r"\s+", " ", part) for i, part in enumerate(parts))
    text = _HTML_CELL.sub("  ", _HTML_LINE.sub("\n", text))
    text = html.unescape(_HTML_TAG.sub("", text))
    return "".join(line.strip() + "\n" for line in text.splitlines() if line.strip())


def visible_text(outputs) -> str:
    """The text a reader sees under a cell: streams, tracebacks, and results as a notebook shows them (their
    HTML when they have one, else plain text; images are not text)."""
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
            if any(k.startswith("image/") for k in data):
                part = ""
            elif "text/html" in data:
                part = html_text(_text(data["text/html"]))
            else:
                part = _text(data.get("text/plain"))
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
# A fraction ("3/4", "1/3 real time") is two typed numbers, a leading-dot decimal (".5 s") a number; a
# path or an id ("a/b/3", "#77") is not.
_NUMBER = re.compile(r"(?<![\w.@#])(?<![^0-9]/)(?<!^/)(?<![A-Za-z]-)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?=[KMGT]i?B\b|x\b|[^\w]|$)"
                     r"|(?<![\w.@#/])\.()(\d+)\b")
_EXCUSED = [
    re.compile(r"`[^`]*`"),  # code: names, arguments, versions
    re.compile(r"\[[^\]]*\]\([^)]*\)|<https?://[^>]*>|https?://\S+"),  # links
    re.compile(r"\b(?:19|20)\d\d(?:-\d\d(?:-\d\d)?)?\b"),  # years and dates
    re.compile(r"\b(?:v|vLLM |vllm |release |version |Python |torch |CUDA |Colab |Llama[- ]?)\d+(?:\.\d+)*\w*", re.I),
    re.compile(r"\d+(?:\.\d+){2,}(?:\.post\d+)?"),  # dotted versions such as 0.25.1 (one dot is a decimal)
    # "sections 3 and 4", "cells 5, 6": the list goes on only over bare numbers, never over a quantity
    # ("at step 3, 8 GiB at step 4": the 8 GiB is a figure)
    re.compile(r"(?:(?<!#)#(?=\d)|PR |issue |sections? |cells? |notebooks? |steps? |stages? |lines? |Q)\s?\d+"
               r"(?:\s*(?:and|,|–|-|to)\s*\d+(?![\d.,]*\s*(?:[KMGT]i?B|%|×|x\b|s\b|ms\b|tokens?\b)))*", re.I),
    re.compile(r"\b(?:T4|L4|A10G|A100|H100|H200|V100|P100|RTX[- ]?\d+\w*|\d{4} ?Ti|GTX[- ]?\d+|A\d{2,4}\w*)(?:-\d+GB)?\b"),
    # model names and units glued to letters (3B, 24kHz, fp16), but not a memory size (24GB: a typed figure)
    # nor a multiplier (3x faster: a typed figure like 3× faster)
    re.compile(r"\b\w*\d+(?![KMGT]i?B\b|x\b)[A-Za-z]\w*\b"),
    re.compile(r"^\s*#+\s*\d+\s*[.·](?!\d)", re.M),  # heading numbers ("## 4. ...", "# 02 · ..."), not "## 12.5 GiB"
    re.compile(r"\b\d+(?:-| |–)?(?:bit|bits|B)\b"),  # weight formats and sizes in a model's name
    re.compile(r"^\s*\d+[.)]\s", re.M),  # a numbered list's item numbers
    re.compile(r"\b(?:CC|compute capability)\s*(?:[≥<>=]+\s*)?\d+\.\d\b"),  # a GPU's compute capability
]


# Sentences, list items, paragraphs, and each row of a table: a citation excuses only its own piece.
_SENTENCE = re.compile(r"(?<=[.;!?])\s+(?=[A-Z(*`\"'])|\n\s*(?:[-*]|\d+\.)\s|\n\s*\n|\n(?=\s*\|)")
# A README or datasheet cites only with the document named ("MetaVoice's README", "the T4 datasheet"): "per the
# README" says not whose.
_CITATION = re.compile(r"(?<!not )\bcited\b|https?://|@[0-9a-f]{7}|\b(?:PR|issue|PRs|issues)\s*#|\w/\w[\w.-]*#\d"
                       r"|(?<!\bthe )(?<!\ba )(?<!\ban )(?<!\bthis )(?<!\bthat )(?<!\bits )(?<!\bour )(?<!\bper )"
                       r"(?<=\S )(?:README|datasheet)", re.I)

# A card's memory class ("an 8 GB card", "a 24 GB one") is a name, not a figure, only for a class the catalog's
# cards are sold in (hardware.memory_classes_gb: 8, 12, 16, 24, 40, 80); "a 5 GB card" is a typed figure.
_CARD_CLASS = re.compile(r"\b(\d+) ?GB(?= (?:cards?|GPUs?|consumer|laptop|one)\b)")


@functools.cache
def _memory_classes() -> frozenset[int]:
    from colab_tts.hardware import memory_classes_gb

    return frozenset(memory_classes_gb())


# Where a clause ends, for what a citation excuses: ; : a dash, a parenthesis (not a comma, not a range's –).
_CLAUSE_END = re.compile(r"[;()]|:\s|\s[—–-]\s|—")
_PARENS = re.compile(r"\((?:[^()]|\([^()]*\))*\)")  # one level of nesting: (cited: [x](url))


def _clause_start(text: str, at: int) -> int:
    ends = [m.end() for m in _CLAUSE_END.finditer(text, 0, at)]
    return ends[-1] if ends else 0


def _clause_end(text: str, at: int) -> int:
    m = _CLAUSE_END.search(text, at)
    return m.start() if m else len(text)


def _uncited(sentence: str) -> str:
    """The sentence with what its citations excuse blanked: a parenthesis holding a citation and the clause
    right before it; a citation outside parentheses, its own clause."""
    spans = [(_clause_start(sentence, m.start()), m.end()) for m in _PARENS.finditer(sentence)
             if _CITATION.search(m.group())]
    for c in _CITATION.finditer(sentence):
        if not any(a <= c.start() < b for a, b in spans):
            spans.append((_clause_start(sentence, c.start()), _clause_end(sentence, c.end())))
    chars = list(sentence)
    for a, b in spans:
        chars[a:b] = [ch if ch == "\n" else " " for ch in chars[a:b]]
    return "".join(chars)


_MULTIPLIER_BEFORE = re.compile(r"(?<![\w.])x(?=\d+\b)(?!(?:86|64)\b)")  # not the x86 / x64 architectures


def _words(markdown: str) -> str:
    """The prose whose numbers need an output: what citations excuse, and excused patterns, blanked."""
    markdown = "\n".join(_uncited(s) for s in _SENTENCE.split(markdown) if s)  # keeps ^
    markdown = _MULTIPLIER_BEFORE.sub("x ", markdown)  # "x2" is a typed figure as "2x" and "×2" are
    markdown = _CARD_CLASS.sub(lambda m: " " if int(m.group(1)) in _memory_classes() else m.group(), markdown)
    for pattern in _EXCUSED:
        markdown = pattern.sub(" ", markdown)
    return markdown


def _numbers(text: str):
    """(whole, fraction) for each number in the text; ".5" reads as ("0", "5")."""
    for whole, frac, _, dot_frac in _NUMBER.findall(text):
        yield (whole, frac) if whole else ("0", dot_frac)


def _shown(outputs_text: str) -> set[str]:
    """Every number in the outputs, as typed and at each coarser rounding (so 47.3 backs "47" and "47.3")."""
    found = set()
    for whole, frac in _numbers(outputs_text):
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


def unbacked_numbers(nb) -> list[tuple[int, str]]:
    """(cell index, number) for each number typed in markdown that no output of the notebook shows (rounded)
    and that no citation beside it, version, year or name excuses (see the module's docstring)."""
    outputs = "\n".join(visible_text(c.get("outputs")) for c in nb.cells if c.get("cell_type") == "code")
    shown = _shown(outputs)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "markdown":
            continue
        for whole, frac in _numbers(_words(_text(cell.get("source")))):
            typed = whole.replace(",", "") + (f".{frac}" if frac else "")
            if typed not in shown:
                problems.append((i, whole + (f".{frac}" if frac else "")))
    return problems


# A product a reader can redo: "2 (K,V) x 28 x 8 x 128 x 2 bytes = 114,688 bytes", "3.30 B parameters x 2 bytes
# = 6.15 GiB". Each factor is a number with at most a parenthesis or two words after it ("B" / "M" scale it).
_FACTOR = r"\d[\d,]*(?:\.\d+)?(?:\s*\([^()]*\)|(?:\s+[A-Za-z/]+){1,2})?"
_PRODUCT = re.compile(rf"(?<![\w.,])({_FACTOR}(?:\s*[x×]\s*{_FACTOR})+)\s*=\s*(\d[\d,]*(?:\.\d+)?)\s*(bytes|KiB|MiB|GiB)\b")
_BYTES = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_SCALE = {"B": 1e9, "billion": 1e9, "M": 1e6, "million": 1e6}
# "3.30 B parameters = 6.18 GiB in float16": the bytes per parameter are the format's
_PARAMS_IN = re.compile(r"(?<![\w.,])(\d[\d,]*(?:\.\d+)?)\s*(B|M|billion|million)?\s+parameters\s*[=,:]\s*"
                        r"(\d[\d,]*(?:\.\d+)?)\s*(KiB|MiB|GiB)\s+(?:in\s+)?(float32|fp32|float16|fp16|bfloat16|bf16)\b")
_FORMAT_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}


def _bounds(number: str) -> tuple[float, float]:
    """The interval a printed number stands for (half a unit of its last digit either side)."""
    value = float(number.replace(",", ""))
    half = 0.5 * 10 ** -len(number.split(".")[1]) if "." in number else 0.0
    return value - half, value + half


def arithmetic_problem(outputs) -> str | None:
    """A product printed next to its inputs that the inputs do not give (within the rounding shown), or None.
    "3.30 B parameters x 2 bytes = 6.18 GiB" is refused (3.30 x 2 gives 6.15): print every term that makes the
    figure (padding, caches) so a reader multiplying out the line gets it."""
    for line in visible_text(outputs).splitlines():
        for m in _PARAMS_IN.finditer(line):
            count, scale, shown, unit, fmt = m.groups()
            a, b = (v * _SCALE.get(scale, 1.0) * _FORMAT_BYTES[fmt] / _BYTES[unit] for v in _bounds(count))
            low, high = _bounds(shown)
            if b < low or a > high:
                return (f"{m.group(0)!r} does not multiply out ({count}{' ' + scale if scale else ''} x "
                        f"{_FORMAT_BYTES[fmt]} bytes gives {a:,.4g}..{b:,.4g} {unit}): print every term of the figure "
                        "(vocabulary padding, caches) beside its inputs")
        for m in _PRODUCT.finditer(line):
            if "byte" not in m.group(1):
                continue  # a count of things, not of bytes
            low = high = 1.0
            for factor in re.split(r"\s*[x×]\s*", m.group(1)):
                number = re.match(r"\d[\d,]*(?:\.\d+)?", factor).group()
                a, b = _bounds(number)
                scale = next((v for w, v in _SCALE.items() if re.search(rf"\s{w}\b", factor)), 1.0)
                low, high = low * a * scale, high * b * scale
            unit = _BYTES[m.group(3)]
            shown_low, shown_high = (v * unit for v in _bounds(m.group(2)))
            if high < shown_low or low > shown_high:
                return (f"{m.group(0)!r} does not multiply out ({low / unit:,.4g}..{high / unit:,.4g} {m.group(3)}): "
                        "print every term of the figure beside its inputs")
    return None
