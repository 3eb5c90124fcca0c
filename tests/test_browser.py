"""Notebook 01's synthesis panel in a real browser: JupyterLab in headless Chromium, a real click.

How it works:
1. ``panel_notebook`` copies notebook 01 and keeps only what its panel needs: the parameters cell
   (followed by an override cell, as papermill injects one, setting ``BACKEND = "transformers"``,
   which starts in seconds where vLLM takes about a minute), the panel cell, and, walking back from
   the panel cell, every code cell that defines a name a kept cell reads (found with ``ast``).
   Everything after the panel cell (``tts.close()``) is dropped.
2. A JupyterLab server (this Python, its ``python3`` kernel, ``PYTHONPATH`` pointing at this checkout)
   serves the copy on 127.0.0.1 with a random token, no news or update checks, no cell windowing; the
   kernel session is started through the REST API before the page opens.
3. Playwright drives Debian's Chromium (``/usr/bin/chromium``; Playwright's own browser download is
   not used): open the notebook, Run > Run All Cells from the menu, wait until every cell has run and
   the panel is drawn, then click the panel's Synthesize button with the mouse. The test asserts the
   click made a new synthesis (the button was disabled while it ran, the player was replaced), and
   that the panel shows an ``<audio>`` player and the timing line. A screenshot of what a person sees
   is kept at ``build/browser/notebook01_panel.png`` (``notebook01_failure.png`` when it fails).

What it relies on in notebook 01 (content markers, never cell indices):
- the code cell tagged ``parameters`` assigns ``BACKEND``;
- the panel is built in the first code cell whose source contains ``SynthesisPanel(``, and that cell
  displays it; the page has one button labelled ``Synthesize`` (ipywidgets' ``widget-button``);
- the panel is an ipywidgets ``VBox`` (``widget-vbox``) holding the button, a Textarea, an Output with
  the player and an HTML line with the timing (``timing_line``: "... s of audio in ... s (RTF ...)"), or
  with the error for an empty text ("⚠ ... empty ...").

Skipped with the reason when Chromium, Playwright or JupyterLab is missing, except under CI (``CI`` set,
as ``.ci/run`` runs) or ``COLAB_TTS_REQUIRE_BROWSER=1``, where a missing piece fails the test.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_t4_float16_setup.ipynb"
SHOTS = ROOT / "build" / "browser"
PANEL_MARKER = "SynthesisPanel("
OVERRIDES = {"BACKEND": "transformers"}
TIMING = re.compile(r"\d+(\.\d+)? s of audio in \d+(\.\d+)? s \(RTF \d")
REQUIRED = bool(os.environ.get("CI")) or os.environ.get("COLAB_TTS_REQUIRE_BROWSER") == "1"
RUN_ALL_TIMEOUT_S = 300  # all kept cells on 2 busy cores: about 1 minute
CLICK_TIMEOUT_S = 120  # one synthesis of the offline demo: about 10 s


# --- which cells the panel needs --------------------------------------------------------------------

def _python(source: str) -> str:
    """Cell source as plain Python (IPython magics and shell escapes turned into calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def defined_and_read(source: str) -> tuple[set[str], set[str]]:
    """Names a cell binds (assignments, imports, defs, loop targets) and names it reads."""
    tree = ast.parse(_python(source))
    defined, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, ast.Store | ast.Del) else read).add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
    return defined, read - set(dir(builtins))


def panel_notebook(nb, overrides=OVERRIDES, marker=PANEL_MARKER):
    """A copy of ``nb`` with the parameters cell, an override cell after it, the first cell containing
    ``marker``, and the earlier code cells that define what those read (transitively)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    panel = next((i for i, c in enumerate(code) if marker in c.source), None)
    if panel is None:
        raise ValueError(f"no code cell contains {marker!r}: the browser test looks for the panel by it")
    params = next((i for i, c in enumerate(code[:panel]) if "parameters" in c.metadata.get("tags", [])), None)
    if params is None:
        raise ValueError("no code cell before the panel is tagged 'parameters'")
    missing = set(overrides) - defined_and_read(code[params].source)[0]
    if missing:
        raise ValueError(f"the parameters cell does not define {sorted(missing)}")
    keep, needed = {params, panel}, defined_and_read(code[panel].source)[1]
    for i in range(panel - 1, -1, -1):
        defined, read = defined_and_read(code[i].source)
        if i in keep or defined & needed:
            keep.add(i)
            needed |= read
    cells = []
    for i in sorted(keep):
        cells.append(code[i])
        if i == params:
            lines = [f"{k} = {v!r}" for k, v in overrides.items()]
            cells.append(nbformat.v4.new_code_cell("\n".join(["# Injected by tests/test_browser.py", *lines]),
                                                   metadata={"tags": ["injected-parameters"]}))
    out = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    for cell in out.cells:
        cell.outputs, cell.execution_count = [], None
    return out


# --- JupyterLab and Chromium ------------------------------------------------------------------------

def _chromium() -> str | None:
    for candidate in (os.environ.get("COLAB_TTS_CHROMIUM"), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _missing() -> list[str]:
    missing = []
    if _chromium() is None:
        missing.append("Chromium (apt-get install chromium, or set COLAB_TTS_CHROMIUM)")
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{package} (pip install -e '.[test]')")
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


@contextlib.contextmanager
def jupyter_lab(root: Path, log: Path):
    """A JupyterLab server on 127.0.0.1 serving ``root``; yields its base URL and token."""
    port, token = _free_port(), secrets.token_hex(16)
    home = root / ".jupyter-home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "COLAB_TTS_OUTPUT_DIR": str(root / "outputs"), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root
        cmd.append("--allow-root")
    # Every cell in the DOM (no windowing), no "Jupyter news?" toast over the panel.
    for plugin, values in LAB_SETTINGS.items():
        path = home / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({server.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer in 90 s:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _api(url, token, path, data=None):
    request = urllib.request.Request(f"{url}{path}?token={token}", method="POST" if data else "GET",
                                     data=json.dumps(data).encode() if data else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def start_kernel(url, token, notebook: str) -> str:
    """Start the notebook's kernel session through the REST API before the page opens: JupyterLab then
    attaches to it (opening first races JupyterLab's own kernel start, and a 'Select Kernel' dialog or
    a shut-down kernel follows under load). Returns the kernel id."""
    session = _api(url, token, "/api/sessions",
                   {"path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": "python3"}})
    return session["kernel"]["id"]


def _launch(playwright):
    return playwright.chromium.launch(
        executable_path=_chromium(), headless=True,
        # Root, no GPU, no network: the sandbox and Chromium's background calls home are turned off.
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])


ALL_CELLS_RAN = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""

WATCH_RUN = """(panel) => {
  // Record what the click does: the button disabled while the kernel synthesizes, the player replaced.
  const button = panel.querySelector('button.widget-button');
  window.__panelRun = {disabled: false, oldAudio: panel.querySelector('audio')};
  new MutationObserver(() => { if (button.disabled) window.__panelRun.disabled = true; })
    .observe(button, {attributes: true, attributeFilter: ['disabled']});
}"""

NEW_PLAYER = """(panel) => {
  const run = window.__panelRun, audio = panel.querySelector('audio');
  return !!audio && audio !== run.oldAudio && run.disabled && !panel.querySelector('button.widget-button').disabled;
}"""


def run_all_and_wait(page, timeout_s=RUN_ALL_TIMEOUT_S):
    """Wait until every code cell has an execution count; accept a 'Select Kernel' dialog if one asks."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(ALL_CELLS_RAN):
        dialog = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
        if dialog.count():
            dialog.click()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the notebook's cells had not all run after {timeout_s} s")
        page.wait_for_timeout(500)


# --- tests ------------------------------------------------------------------------------------------

def test_panel_notebook_keeps_parameters_override_panel_and_its_inputs_only():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("!echo install"),
        nbformat.v4.new_code_cell('BACKEND = "vllm"\nTEXT = "hi"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import math\nfrom os import path as p"),
        nbformat.v4.new_code_cell("if math.pi:\n    tts = BACKEND\nelse:\n    tts = None"),
        nbformat.v4.new_code_cell("speech = tts * 2"),
        nbformat.v4.new_code_cell("slow = 1"),
        nbformat.v4.new_code_cell("panel = SynthesisPanel(tts, text=TEXT)\npanel"),
        nbformat.v4.new_code_cell("tts.close()"),
    ])
    sources = [c.source for c in panel_notebook(nb).cells]
    assert sources == ['BACKEND = "vllm"\nTEXT = "hi"', '# Injected by tests/test_browser.py\nBACKEND = \'transformers\'',
                       "import math\nfrom os import path as p",
                       "if math.pi:\n    tts = BACKEND\nelse:\n    tts = None",
                       "panel = SynthesisPanel(tts, text=TEXT)\npanel"]
    with pytest.raises(ValueError, match="SynthesisPanel"):
        panel_notebook(nbformat.v4.new_notebook(cells=nb.cells[:-2]))
    with pytest.raises(ValueError, match="does not define"):
        panel_notebook(nb, overrides={"DEVICE": "cpu"})


def test_notebook01_panel_notebook_is_valid_and_ends_with_the_panel():
    nb = panel_notebook(nbformat.read(NOTEBOOK, as_version=4))
    nbformat.validate(nb)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert "parameters" in tags[0] and "injected-parameters" in tags[1]
    assert PANEL_MARKER in nb.cells[-1].source
    assert not any("close()" in c.source for c in nb.cells)


@pytest.mark.browser
@pytest.mark.slow
def test_notebook01_panel_synthesizes_on_a_click_in_jupyterlab():
    missing = _missing()
    if missing:
        reason = "browser test needs " + ", ".join(missing)
        if REQUIRED:
            pytest.fail(reason + " (required under CI)")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="colab_tts_browser_") as tmp:
        root = Path(tmp)
        name = "notebook01_panel.ipynb"
        nbformat.write(panel_notebook(nbformat.read(NOTEBOOK, as_version=4)), root / name)
        with jupyter_lab(root, SHOTS / "jupyterlab.log") as (url, token), sync_playwright() as pw:
            start_kernel(url, token, name)
            browser = _launch(pw)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            try:
                # /doc: JupyterLab's single-document view, the notebook without the file browser.
                page.goto(f"{url}/doc/tree/{name}?token={token}", timeout=90_000)
                page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=90_000)
                expect(page.locator(".jp-Toolbar-kernelName")).to_have_attribute("aria-label", re.compile("Python"),
                                                                                 timeout=60_000)
                expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
                    1, timeout=60_000)
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                run_all_and_wait(page)

                button = page.locator("button.widget-button", has_text="Synthesize")
                expect(button).to_have_count(1, timeout=30_000)
                panel = button.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
                panel.evaluate(WATCH_RUN)
                button.scroll_into_view_if_needed()
                button.click()  # a mouse click in Chromium; ipywidgets sends it to the kernel
                page.wait_for_function(NEW_PLAYER, arg=panel.element_handle(), timeout=CLICK_TIMEOUT_S * 1000,
                                       polling=250)

                audio = panel.locator(".widget-output audio")
                expect(audio).to_have_count(1)
                expect(audio).to_be_visible()
                timing = panel.locator(".widget-html").filter(has_text=TIMING)
                expect(timing).to_have_count(1)
                # The player holds a sound Chromium can decode, as long as the timing line says.
                audio.evaluate("a => a.load()")
                page.wait_for_function("a => a.readyState >= 1 && isFinite(a.duration)", arg=audio.element_handle(),
                                       timeout=30_000)
                seconds = float(TIMING.search(timing.inner_text()).group(0).split(" s of audio")[0])
                assert audio.evaluate("a => a.duration") == pytest.approx(seconds, abs=0.01)
                panel.scroll_into_view_if_needed()
                page.screenshot(path=SHOTS / "notebook01_panel.png")

                # What a person types reaches the kernel: emptied with the keyboard, the text comes back
                # as the panel's one-line error (the "⚠" line), not a traceback.
                panel.locator("textarea").click()
                page.keyboard.press("Control+A")
                page.keyboard.press("Delete")
                button.click()
                expect(panel.locator(".widget-html").filter(has_text=re.compile("⚠.*empty"))).to_have_count(
                    1, timeout=CLICK_TIMEOUT_S * 1000)
            except Exception:
                page.screenshot(path=SHOTS / "notebook01_failure.png")
                (SHOTS / "notebook01_failure.html").write_text(page.content())
                raise
            finally:
                browser.close()
