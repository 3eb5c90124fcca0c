"""The rules every notebook in notebooks/ keeps (tools/nbrules.py), and that they are enforced: by the
template build, by `make run`, and under nbval (notebooks/conftest.py) on every executed cell."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbrules  # noqa: E402
import nbtemplate  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def stream(text, name="stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_an_output_of_40_lines_fits_and_41_does_not():
    assert nbrules.output_problem([stream("x\n" * 40)]) is None
    assert "41 lines" in nbrules.output_problem([stream("x\n" * 41)])
    assert "4,001 characters" in nbrules.output_problem([stream("y" * 4000 + "\n")])


def test_stream_chunks_count_as_the_reader_sees_them():
    # nbval keeps each chunk apart: 50 chunks of one line without newline are one line on screen
    assert nbrules.visible_text([stream("a") for _ in range(50)]).count("\n") == 0
    assert nbrules.output_problem([stream("a") for _ in range(50)]) is None
    # a figure's "<Figure ...>" placeholder is not text a reader reads
    fig = nbformat.v4.new_output("display_data", data={"image/png": "AA==", "text/plain": "<Figure>\n" * 50})
    assert nbrules.visible_text([fig]) == ""


@pytest.mark.parametrize("source, fix", [
    ("x = 1\n#\n# What it means: prose.", "markdown"),
    ("x = 1\n# ## 5. A heading", "markdown"),
    ("# NBVAL_CHECK_OUTPUT\nprint(1)", "tag the cell"),
    ("x = 1\n# **5. Which TTS systems fit where**", "markdown"),  # a bold line is a heading too
    ("x = 1\n# 5. Which TTS systems fit where", "markdown"),
    ("# What this means: the KV cache outgrows the card.\nx = 1", "markdown"),
])
def test_markdown_or_a_visible_marker_in_a_code_cell_is_refused(source, fix):
    assert fix in nbrules.markdown_in_code(source)


def test_ordinary_comments_are_code():
    assert nbrules.markdown_in_code("# enforce_eager: skip torch.compile on the CPU\nx = 1  # why\n") is None


def test_the_template_build_refuses_markdown_in_a_code_cell(tmp_path):
    source = (ROOT / "tests" / "test_notebook_template.py").read_text().split('GOOD = """', 1)[1].split('"""')[0]
    path = tmp_path / "99_demo.py"
    path.write_text(source.replace("print(X)", "print(X)\n#\n# ## 2. Next section"))
    with pytest.raises(nbtemplate.SourceError, match="markdown"):
        nbtemplate.notebook_from_source(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_markdown_or_visible_marker_in_any_code_cell(path):
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            assert nbrules.markdown_in_code(cell.source) is None, f"{path.name} cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_fit_a_screen(path):
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            assert nbrules.output_problem(cell.get("outputs")) is None, f"{path.name} cell {i}"


def test_under_nbval_a_cell_that_prints_a_log_dump_fails(tmp_path):
    """notebooks/conftest.py checks every executed cell, so a log dump cannot pass `make test`."""
    shutil.copy(ROOT / "notebooks" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "nbrules.py", tmp_path / "tools" / "nbrules.py")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    shutil.move(tmp_path / "conftest.py", nbs / "conftest.py")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print('short')"),
                nbformat.v4.new_code_cell("import sys\nfor i in range(60): print('WARNING vllm', i, file=sys.stderr)")]
    nbformat.write(nb, nbs / "99_dump.ipynb")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", str(nbs)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-2000:]
    assert "prints 60 lines" in done.stdout


def _ran(markdown, printed):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell("...")]
    nb.cells[1].outputs = [stream(printed)]
    return nb


def test_a_typed_number_must_appear_rounded_in_an_output():
    assert nbrules.unbacked_numbers(_ran("a T4 reaches about 47 tokens/s", "ceiling 47.2 tokens/s\n")) == []
    assert nbrules.unbacked_numbers(_ran("it holds 52,400 tokens", "52,400 tokens\n")) == []
    # a figure from another model of the same quantity: 48 is not what this run printed
    assert nbrules.unbacked_numbers(_ran("a T4 reaches about 48 tokens/s", "ceiling 47.2 tokens/s\n")) == [(0, "48")]
    assert nbrules.unbacked_numbers(_ran("quoted as 60–80 % for good engines", "0.69\n")) == [(0, "60"), (0, "80")]


def test_citations_versions_years_and_names_excuse_a_number():
    prose = ("52,400 tokens (cited: canopyai/Orpheus-TTS PR #77) on vLLM 0.25.1 in 2025, an RTX 4060, "
             "section 12, `max_num_seqs=256`, Orpheus 3B")
    assert nbrules.unbacked_numbers(_ran(prose, "nothing\n")) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_parameters_cell_is_a_colab_form(path):
    """Every one-line parameter carries `# @param` (Colab draws a form; papermill still finds the tag)."""
    import ast

    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and node.lineno == node.end_lineno:
            assert "# @param" in lines[node.lineno - 1], f"{path.name}: {lines[node.lineno - 1]!r}"


@pytest.mark.parametrize("markdown, printed, unbacked", [
    ("a T4 decodes 1.38 s of audio per second", "3\n", ["1.38"]),  # a decimal is no dotted version
    ("the ceiling is 47.9 tokens/s", "ceiling 47.2\n", ["47.9"]),
    ("a T4 reaches 100 tokens/s", "ceiling 51 tokens/s\n", ["100"]),  # rounding backs within 5 %, not 2x
    ("it holds 4000 tokens", "3501 tokens\n", ["4000"]),
    ("| card | tokens/s |\n|---|---|\n| T4 | 95 |\n| source | [x](https://a.b) |", "none\n", ["95"]),
    ("engines reach 60-80 % of it", "60\n", ["80"]),  # both ends of a range are typed numbers
    ("## 95 tokens/s on a T4", "none\n", ["95"]),  # a heading's text is prose; only '## 4.' numbers it
    ("MetaVoice needs 24GB", "none\n", ["24"]),  # a memory size glued to its unit is still a figure
    ("This figure is not cited anywhere: 777 tokens/s.", "none\n", ["777"]),
])
def test_a_typed_figure_cannot_hide_behind_a_pattern_meant_for_names(markdown, printed, unbacked):
    assert [n for _, n in nbrules.unbacked_numbers(_ran(markdown, printed))] == unbacked


def test_names_and_numbered_headings_still_excuse_their_numbers():
    prose = ("## 4. A first look\n\nOrpheus 3B at 24kHz in fp16 on an A100-40GB or RTX-3060-12GB, Llama-3, "
             "PR #77, vLLM 0.10.1, 571.8 shown as about 570 (https://a.b/c cites 95 tokens/s)")
    assert nbrules.unbacked_numbers(_ran(prose, "571.8\n")) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_gpu_to_simulate_has_one_parameter_name_in_every_notebook(path):
    """`papermill -p SIMULATE_GPU RTX-3070` must reach every notebook: a notebook that names the same
    parameter otherwise (05 had PLAN_GPU) plans for the T4 whatever the reader asked for."""
    import ast

    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    names = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert "SIMULATE_GPU" in names, f"{path.name} parameters: {names}"
    gpu_like = [n for n in names if n.endswith("_GPU") and n != "SIMULATE_GPU"]
    assert not gpu_like, f"{path.name}: {gpu_like} plans a simulated GPU under another name than SIMULATE_GPU"


def test_a_rounded_figure_a_heading_number_and_a_compute_capability_are_backed():
    prose = "What it means: about 70× real time.\n\n## 13. Summary\n\nA T4 has CC 7.5; bfloat16 needs CC ≥ 8.0."
    assert nbrules.unbacked_numbers(_ran(prose, "67.82 x real time\n")) == []
    assert nbrules.unbacked_numbers(_ran("about 80× real time", "67.82\n")) == [(0, "80")]


@pytest.mark.parametrize("markdown, unbacked", [
    # a link or "cited" excuses the numbers in its parenthesis and the clause before it, not the sentence
    ("Orpheus reaches 95 tokens/s on an A10G (https://a.b/c), and 777 tokens/s on a T4.", ["777"]),
    ("It peaks at 8.15 GB (cited: index-tts PR #755); with our settings 6.66 GB.", ["6.66"]),
    ("[95 tokens/s](https://a.b/c) upstream: we measured 777 of them.", ["777"]),
    ("The log (https://a.b/c) then shows 95 tokens/s.", ["95"]),  # after the citation is not beside it
    ("The figure of 95 tokens/s is cited; 777 is ours.", ["777"]),
    ("Upstream's README quotes 95 tokens/s — 777 here.", ["777"]),
    ("It needs 12 GB, per the README.", ["12"]),  # a README that says not whose cites nothing
    ("The datasheet gives 320 GB/s; the T4 datasheet gives 300 GB/s.", ["320"]),
])
def test_a_citation_excuses_only_the_numbers_beside_it(markdown, unbacked):
    assert [n for _, n in nbrules.unbacked_numbers(_ran(markdown, "none\n"))] == unbacked


@pytest.mark.parametrize("markdown, unbacked", [
    ("The sweep makes 3 runs of 7 calls.", ["3", "7"]),  # small counts are typed numbers too
    ("about 2.5 s per utterance", ["2.5"]),
    # names, formats, list items, steps and sections, a card's class: not figures
    ("1. On an 8 GB card, 4-bit Orpheus 3B on a T4 at step 1 (section 2).\n2. Next.", []),
    # a memory class is a name only for the classes the catalog's cards are sold in
    ("A 24 GB one and 12 GB GPUs, an 80 GB card.", []),
    ("It fits a 5 GB card, or a 22 GB one.", ["5", "22"]),
])
def test_numbers_below_ten_are_checked_with_the_same_exceptions(markdown, unbacked):
    assert [n for _, n in nbrules.unbacked_numbers(_ran(markdown, "none\n"))] == unbacked
    assert nbrules.unbacked_numbers(_ran("The sweep makes 3 runs.", "runs: 3\n")) == []


def _html(markup, plain="<Table>"):
    return nbformat.v4.new_output("display_data", data={"text/html": markup, "text/plain": plain})


def test_an_html_table_counts_toward_the_screen_limit_row_by_row():
    rows = "".join(f"<tr><td>{i}</td><td>{i * 1.5}</td></tr>" for i in range(41))
    out = _html(f"<table>\n<thead><tr><th>a</th><th>b</th></tr></thead>\n<tbody>{rows}</tbody></table>")
    assert "42 lines" in nbrules.output_problem([out])  # the header and 41 rows; the source's newlines are not lines
    assert nbrules.output_problem([_html(f"<table>{rows[:20 * 30]}</table>")]) is None
    assert "characters" in nbrules.output_problem([_html("<p>" + "word " * 900 + "</p>")])
    # what a player or a script carries is not text a reader reads
    audio = _html('<audio controls><source src="data:audio/wav;base64,' + "A" * 9000 + '"/></audio><script>x()</script>')
    assert nbrules.output_problem([audio]) is None


def test_numbers_in_an_html_output_back_the_prose():
    nb = _ran("the ceiling is 47 tokens/s", "")
    nb.cells[1].outputs = [_html("<table><tr><td>ceiling</td><td>47.2</td></tr></table>", plain="<Table 1 row>")]
    assert nbrules.unbacked_numbers(nb) == []
    nb.cells[1].outputs = [_html("<table><tr><td>ceiling</td><td>51.0</td></tr></table>", plain="47.2")]
    assert nbrules.unbacked_numbers(nb) == [(0, "47")]  # the reader sees the HTML, not the plain text


@pytest.mark.parametrize("markdown, unbacked", [
    ("It takes about 3/4 of the card.", ["3", "4"]),  # a fraction is two typed numbers
    ("Runs at 1/3 real time.", ["1", "3"]),
    ("It is .5 s per step.", ["0.5"]),  # a decimal without its leading zero
    ("4-bit is 3x faster.", ["3"]),  # a multiplier typed with an x, as with ×
    ("The cache doubles, x2, on an x86 CPU.", ["2"]),
    ("It uses 7 GiB at step 3, 8 GiB at step 4.", ["7", "8"]),  # a step list does not run on into a figure
    ("cell 3 shows 5 GiB and cell 4, 9 GiB", ["5", "9"]),
    ("lines 3 and 9 GiB", ["9"]),
    ("## 12.5 GiB is the answer", ["12.5"]),  # a heading's decimal is no heading number
])
def test_fractions_multipliers_and_figures_after_a_list_of_steps_are_checked(markdown, unbacked):
    assert [n for _, n in nbrules.unbacked_numbers(_ran(markdown, "none\n"))] == unbacked


def test_lists_of_sections_and_paths_still_excuse_their_numbers():
    prose = "## 3. Next\n\nSee sections 3 and 4, cells 5, 6 and notebook 02 (`a/b/3`); the 4-bit weights."
    assert nbrules.unbacked_numbers(_ran(prose, "none\n")) == []
    assert nbrules.unbacked_numbers(_ran("about 0.5 s per step", "0.5 s\n")) == []


@pytest.mark.parametrize("printed", [
    "weights: 3.30 B parameters = 6.18 GiB in float16",  # 3.30 x 2 bytes is 6.15 GiB: padding and cache unsaid
    "3.30 B parameters x 2 bytes = 6.18 GiB",
    "2 (K,V) x 28 x 8 x 128 x 2 bytes = 229,376 bytes",
])
def test_a_product_printed_beside_its_inputs_must_multiply_out(printed):
    assert "does not multiply out" in nbrules.arithmetic_problem([stream(printed + "\n")])


@pytest.mark.parametrize("printed", [
    "2 (K,V) x 28 x 8 x 128 x 2 bytes = 114,688 bytes = 112 KiB per token",
    "MetaVoice-1B's first stage is 1.25 B parameters, 2.33 GiB in fp16",  # 1.245..1.255 B x 2 bytes holds 2.33
    "3.30 B parameters x 2 bytes = 6.15 GiB",
])
def test_a_product_that_multiplies_out_within_its_rounding_passes(printed):
    assert nbrules.arithmetic_problem([stream(printed + "\n")]) is None


def test_make_run_refuses_a_product_that_does_not_multiply_out():
    import run_notebooks

    nb = _ran("nothing typed", "weights: 3.30 B parameters = 6.18 GiB in float16\n")
    assert "cell 1" in run_notebooks.too_long(nb) and "multiply out" in run_notebooks.too_long(nb)
