"""Clickable panels for the notebooks: type text, move sliders, press Synthesize, listen.

``SynthesisPanel`` drives anything with a ``synthesize(text, **knobs) -> Speech`` method (Orpheus in
notebook 01, the flow stage in notebook 03 through ``SynthesisPanel.for_flow``); ``MemoryGauge``
shows GPU memory used against the plan. Errors land in the panel as one line, never a traceback.
Everything is plain ipywidgets (7.7 on Colab, 8.x elsewhere), so the panels are tested by setting
values and calling ``button.click()``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from . import hardware
from ._checks import one_line, positive
from .cited import value
from .errors import OutOfMemoryAdvice, is_out_of_memory
from .units import GIB


@dataclass(frozen=True)
class Knob:
    """One slider: keyword name, default, range and step."""

    name: str
    value: float
    min: float
    max: float
    step: float
    integer: bool = False


ORPHEUS_KNOBS = (  # Orpheus's defaults (colab_tts/data/cited/orpheus.json)
    Knob("temperature", value("orpheus.temperature"), 0.1, 1.5, 0.05),
    Knob("top_p", value("orpheus.top_p"), 0.1, 1.0, 0.05),
    Knob("repetition_penalty", value("orpheus.repetition_penalty"), 1.0, 2.0, 0.05),
)
FLOW_KNOBS = (Knob("steps", 25, 1, 100, 1, integer=True),)


def enable_colab_widgets() -> bool:
    """Turn on Colab's custom widget manager (needed for ipywidgets there); no-op elsewhere."""
    if not hardware.in_colab():
        return False
    try:
        from google.colab import output  # type: ignore[import-not-found]
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True


def _widgets():
    import ipywidgets

    return ipywidgets


class SynthesisPanel:
    """Text box, voice dropdown, knob sliders, Synthesize button, progress, player and timing."""

    def __init__(self, tts, *, voices=None, knobs=ORPHEUS_KNOBS, text="Hello from a T4 in float16.",
                 gauge: MemoryGauge | None = None, title="Synthesize"):
        if not callable(getattr(tts, "synthesize", None)):
            raise TypeError("tts must have a synthesize(text, **knobs) method, e.g. an OrpheusTTS")
        w = _widgets()
        enable_colab_widgets()
        self.tts, self.gauge, self.knobs = tts, gauge, tuple(knobs)
        voices = list(voices if voices is not None else getattr(tts, "voices", ()) or ())
        self.text = w.Textarea(value=text, description="Text", layout=w.Layout(width="95%", height="80px"))
        self.voice = w.Dropdown(options=voices, value=voices[0], description="Voice") if voices else None
        self.sliders = {
            k.name: (w.IntSlider if k.integer else w.FloatSlider)(
                value=k.value, min=k.min, max=k.max, step=k.step, description=k.name.replace("_", " "),
                style={"description_width": "initial"})
            for k in self.knobs
        }
        self.button = w.Button(description=title, button_style="primary", icon="play")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout=w.Layout(width="50%"))
        self.status = w.HTML(value="")
        self.output = w.Output()
        self.speech = None
        self.error: str | None = None
        self.button.on_click(lambda _button: self.run())
        controls = [self.text] + ([self.voice] if self.voice else []) + list(self.sliders.values())
        parts = controls + [w.HBox([self.button, self.progress]), self.status, self.output]
        if gauge is not None:
            parts.append(gauge.widget)
        self.widget = w.VBox(parts)

    @classmethod
    def for_flow(cls, pipeline, **kwargs) -> SynthesisPanel:
        """The flow-matching variant (notebook 03): a steps slider instead of sampling knobs."""
        kwargs.setdefault("knobs", FLOW_KNOBS)
        kwargs.setdefault("voices", ())
        return cls(pipeline, **kwargs)

    def values(self) -> dict:
        """The keyword arguments the button passes to ``synthesize``."""
        out = {name: s.value for name, s in self.sliders.items()}
        if self.voice is not None:
            out["voice"] = self.voice.value
        return out

    def run(self):
        """What the button does; returns the Speech, or None when the panel shows an error. Any error (a CUDA
        out-of-memory RuntimeError, a bug, Ctrl-C) ends in one line in the panel, which is then ready for the
        next click; Ctrl-C is raised again after that."""
        self.error, self.speech = None, None
        self.button.disabled = True
        self.progress.bar_style, self.progress.value = "info", 0.1
        self.status.value = "<i>synthesizing…</i>"
        try:
            speech = self.tts.synthesize(self.text.value, **self.values())
            line, player = timing_line(speech), speech.play()
        except BaseException as err:
            self.error = error_line(err)
            self.progress.bar_style, self.progress.value = "danger", 1.0
            self.status.value = f"<span style='color:#b00'>⚠ {html.escape(self.error)}</span>"
            if not isinstance(err, Exception):
                raise
            return None
        finally:
            self.button.disabled = False
            if self.gauge is not None:
                try:
                    self.gauge.refresh()
                except Exception:  # a gauge that cannot read the GPU must not keep the panel from the next click
                    pass
        self.speech = speech
        self.progress.bar_style, self.progress.value = "success", 1.0
        self.status.value = html.escape(line)
        # Replace the outputs as state: Output.clear_output() sends a message that JupyterLab applies
        # after this state when the click comes from the browser, leaving no player (tests/test_browser.py).
        self.output.outputs = ()
        self.output.append_display_data(player)
        return speech

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def error_line(err: BaseException) -> str:
    """One line for the panel: our own messages as they are, anything else with its type (and, for a CUDA
    out-of-memory error, what to do)."""
    text = one_line(err) or type(err).__name__
    if isinstance(err, (ValueError, TypeError, OutOfMemoryAdvice)):
        return text
    if not isinstance(err, Exception):
        return f"interrupted ({type(err).__name__}); click again to synthesize"
    if is_out_of_memory(err):
        return (f"the GPU ran out of memory ({type(err).__name__}): lower the settings or shorten the text, "
                f"then click again. {text[:300]}")
    return f"{type(err).__name__}: {text[:500]}"


def timing_line(speech) -> str:
    """'3.41 s of audio in 5.20 s (RTF 1.52), 280 tokens at 61.2 tokens/s' from a Speech."""
    parts = [f"{speech.duration:.2f} s of audio"]
    if speech.timings.total_s > 0:  # no RTF of no audio (the model ended before its first audio frame)
        parts[0] += f" in {speech.timings.total_s:.2f} s" + (f" (RTF {speech.rtf:.2f})" if speech.rtf else "")
    if not speech.duration:
        parts[0] += " (the model ended before any audio: try another seed or a longer text)"
    if speech.tokens_per_s:
        parts.append(f"{speech.num_tokens} tokens at {speech.tokens_per_s:.1f} tokens/s")
    return ", ".join(parts)


class MemoryGauge:
    """A bar of GPU memory: used now against the planned total and the card's size, saying what it counts.

    On CUDA ``refresh()`` reads ``torch.cuda.mem_get_info``: everything in use on the device, by every
    process - the weights, vLLM's whole pre-allocated KV cache (reserved at start, whether requests fill it
    or not), PyTorch's cache and the CUDA context. With no GPU it shows the figure it is given (for example
    a plan's total), labelled as given, not read.
    """

    READ = "read from the device: all memory in use on it (vLLM's reserved KV cache and the CUDA context included)"

    def __init__(self, gpu=None, planned_gib: float | None = None):
        w = _widgets()
        # With no GPU to read, show the catalog GPU asked for (a T4, Colab's free GPU, by default).
        self.gpu = hardware.get_gpu(gpu if gpu is not None else "T4")
        self.planned_gib = planned_gib
        total = self.total_gib
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=total, description="GPU memory",
                                   style={"description_width": "initial"})
        self.label = w.HTML()
        self.widget = w.HBox([self.bar, self.label])
        self.used_gib = 0.0
        self.counts = self.READ if _cuda() else "nothing yet (no GPU here to read)"
        self.refresh(0.0 if not _cuda() else None)

    @property
    def total_gib(self) -> float:
        if _cuda():
            import torch

            return torch.cuda.mem_get_info()[1] / GIB
        return self.gpu.memory_gib

    def refresh(self, used_gib: float | None = None, counts: str | None = None) -> float:
        """Update the bar; with no argument, read the GPU (keeps the last figure without one). ``counts``
        says what a given figure is (e.g. "the plan's total for a simulated T4")."""
        if used_gib is None and _cuda():
            import torch

            free, total = torch.cuda.mem_get_info()
            used_gib = (total - free) / GIB
            self.counts = self.READ
        elif used_gib is not None:
            positive(used_gib, "used_gib", allow_zero=True)
            self.counts = counts or ("given, not read" if not _cuda() else "given by the caller")
        if used_gib is not None:
            self.used_gib = float(used_gib)
        total = self.total_gib
        self.bar.value = min(self.used_gib, total)
        self.bar.bar_style = "danger" if self.used_gib > 0.95 * total else (
            "warning" if self.planned_gib and self.used_gib > self.planned_gib else "success")
        planned = f", planned {self.planned_gib:.2f}" if self.planned_gib is not None else ""
        where = "" if _cuda() else f" on a simulated {self.gpu.name} (no GPU here)"
        text = f"{self.used_gib:.2f} GiB used{planned} of {total:.2f} GiB{where}; counts: {self.counts}"
        self.label.value = html.escape(text, quote=False)
        return self.used_gib

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()
