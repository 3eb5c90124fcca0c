import subprocess
import sys

from colab_tts.cli import main


def test_doctor_simulates_a_gpu(capsys):
    assert main(["doctor", "--gpu", "T4"]) == 0
    out = capsys.readouterr().out
    assert "Tesla T4" in out and "7.5" in out and "float16" in out


def test_doctor_unknown_gpu_is_one_clear_line(capsys):
    assert main(["doctor", "--gpu", "T5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown GPU 'T5'") and "Traceback" not in err


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "colab_tts", "doctor", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--gpu" in done.stdout
