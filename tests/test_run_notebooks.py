import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import run_notebooks  # noqa: E402


def test_a_failing_notebook_fails_the_run_naming_the_cell(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("from colab_tts.display import output_dir\n"
                                          "(output_dir() / 'a.txt').write_text('hi')"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nbformat.write(nb, src / "99_broken.ipynb")
    out = tmp_path / "out"
    assert run_notebooks.main([str(src), str(out)]) == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "cell 3: ValueError: broken on purpose" in text
    assert (out / "99_broken.ipynb").exists() and (out / "99_broken.html").exists()
    assert (out / "99_broken" / "a.txt").read_text() == "hi" and "99_broken/a.txt" in text


def test_a_cell_that_prints_more_than_a_screen_fails_the_run_naming_it(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print('\\n'.join(map(str, range(40))))"),  # 40 lines: fits
                nbformat.v4.new_code_cell("import sys\nfor i in range(41): print(i, file=sys.stderr)")]
    nbformat.write(nb, src / "99_log.ipynb")
    assert run_notebooks.main([str(src), str(tmp_path / "out")]) == 1
    text = capsys.readouterr().out
    assert "cell 1: prints 41 lines" in text and "cell 0" not in text
