import numpy as np
import pytest
import torch

from colab_tts.audio import Speech, Timings
from colab_tts.errors import OutOfMemoryAdvice
from colab_tts.widgets import FLOW_KNOBS, MemoryGauge, SynthesisPanel, timing_line


class EchoTTS:
    """Records what the panel asked for; answers with one second of a tone per word."""

    voices = ("tara", "leo")

    def __init__(self):
        self.calls = []

    def synthesize(self, text, **knobs):
        self.calls.append((text, knobs))
        if not text.strip():
            raise ValueError("text is empty: type something to say")
        if knobs.get("steps", 0) > 90:
            raise OutOfMemoryAdvice("the flow stage", ["use fewer steps"])
        n = 8000 * len(text.split())
        return Speech(np.sin(np.arange(n) / 10).astype(np.float32), 8000, num_tokens=7 * len(text.split()),
                      timings=Timings(generate_s=0.5, decode_s=0.25), text=text)


def test_button_synthesizes_with_the_panel_values_and_shows_player_and_timing():
    tts = EchoTTS()
    panel = SynthesisPanel(tts)
    panel.text.value = "three short words"
    panel.voice.value = "leo"
    panel.sliders["temperature"].value = 0.9
    panel.button.click()
    text, knobs = tts.calls[-1]
    assert text == "three short words"
    assert knobs == {"temperature": 0.9, "top_p": 0.8, "repetition_penalty": 1.3, "voice": "leo"}
    assert panel.error is None and panel.speech.duration == pytest.approx(3.0)
    assert panel.progress.bar_style == "success" and not panel.button.disabled
    assert "RTF 0.25" in panel.status.value and "tokens/s" in panel.status.value
    assert any("audio/wav" in o["data"].get("text/html", "") for o in panel.output.outputs)


def test_errors_show_in_the_panel_not_as_a_traceback():
    panel = SynthesisPanel(EchoTTS())
    panel.text.value = "   "
    assert panel.button.click() is None
    assert panel.speech is None and "text is empty" in panel.error
    assert panel.progress.bar_style == "danger" and "text is empty" in panel.status.value
    assert not panel.button.disabled


def test_flow_variant_has_a_steps_slider_and_turns_oom_into_advice():
    tts = EchoTTS()
    panel = SynthesisPanel.for_flow(tts)
    assert panel.voice is None and list(panel.sliders) == [k.name for k in FLOW_KNOBS]
    panel.sliders["steps"].value = 10
    panel.button.click()
    assert tts.calls[-1][1] == {"steps": 10}
    panel.sliders["steps"].value = 95
    panel.button.click()
    assert "ran out of GPU memory" in panel.error and "fewer steps" in panel.error


def test_panel_needs_something_that_synthesizes():
    with pytest.raises(TypeError, match="synthesize"):
        SynthesisPanel(object())


def test_memory_gauge_shows_used_against_plan_and_refreshes_after_a_run():
    gauge = MemoryGauge("T4", planned_gib=13.2)
    assert gauge.bar.max == pytest.approx(14.74)
    gauge.refresh(7.5)
    assert gauge.bar.value == 7.5 and gauge.bar.bar_style == "success" and "13.20" in gauge.label.value
    gauge.refresh(13.9)
    assert gauge.bar.bar_style == "warning"
    gauge.refresh(14.5)
    assert gauge.bar.bar_style == "danger"
    with pytest.raises(ValueError):
        gauge.refresh(-1)
    panel = SynthesisPanel(EchoTTS(), gauge=gauge)
    panel.button.click()
    assert gauge.widget in panel.widget.children and gauge.used_gib == 14.5  # no GPU: keeps the last figure


def test_timing_line():
    speech = Speech(np.zeros(16000, np.float32), 16000, num_tokens=82, timings=Timings(generate_s=2.0))
    assert timing_line(speech) == "1.00 s of audio in 2.00 s (RTF 2.00), 82 tokens at 41.0 tokens/s"


def test_memory_gauge_without_a_gpu_name_shows_colabs_t4():
    assert MemoryGauge().bar.max == pytest.approx(14.74)


def test_each_click_replaces_the_player_in_the_output_state():
    # JupyterLab shows the Output widget's state; a clear_output() message sent from a click's callback
    # lands after the new state and left no player there (tests/test_browser.py saw it).
    panel = SynthesisPanel(EchoTTS())
    panel.button.click()
    panel.text.value = "two words"
    panel.button.click()
    assert len(panel.output.outputs) == 1
    assert "audio/wav" in panel.output.outputs[0]["data"]["text/html"]


def test_memory_gauge_says_what_it_counts(monkeypatch):
    from colab_tts import widgets

    given = MemoryGauge("T4", planned_gib=13.2)
    given.refresh(13.2, counts="the plan's total for a T4")
    assert "counts: the plan's total for a T4" in given.label.value and "simulated Tesla T4" in given.label.value
    # on a GPU it reads the device, and says that this is everything in use there, vLLM's KV cache included
    monkeypatch.setattr(widgets, "_cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (4 * 2**30, 15 * 2**30))
    read = MemoryGauge("T4")
    read.refresh()
    assert read.used_gib == pytest.approx(11.0) and "read from the device" in read.label.value
    assert "KV cache" in read.label.value and "simulated" not in read.label.value


class FailingTTS(EchoTTS):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def synthesize(self, text, **knobs):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().synthesize(text, **knobs)


@pytest.mark.parametrize("error,says", [
    (RuntimeError("CUDA out of memory. Tried to allocate 3.81 GiB (GPU 0; 14.74 GiB total)\nmore detail"),
     "the GPU ran out of memory (RuntimeError): lower the settings"),
    (KeyError("voice"), "KeyError: 'voice'"),
    (OSError(28, "No space left on device"), "OSError: [Errno 28] No space left on device"),
    (ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero"),
])
def test_any_error_is_one_line_in_the_panel_and_the_next_click_works(error, says):
    panel = SynthesisPanel(FailingTTS(error))
    assert panel.button.click() is None
    assert panel.error.startswith(says) and "\n" not in panel.error, panel.error
    assert panel.progress.bar_style == "danger" and "synthesizing" not in panel.status.value
    assert not panel.button.disabled
    panel.button.click()  # the next click synthesizes
    assert panel.error is None and panel.speech is not None and panel.progress.bar_style == "success"


def test_ctrl_c_leaves_the_panel_ready_and_is_raised_again():
    panel = SynthesisPanel(FailingTTS(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        panel.run()
    assert panel.error.startswith("interrupted") and not panel.button.disabled
    assert panel.run() is not None
