import pytest
import torch

from colab_tts.errors import OutOfMemoryAdvice, is_out_of_memory, oom_advice


def test_cuda_oom_becomes_advice_and_the_planner_is_asked_only_then():
    asked = []

    def advice():
        asked.append(True)
        return ["lower max_model_len to 2,592", "use 25 steps"]

    with oom_advice("synthesis", advice):
        pass
    assert not asked
    with pytest.raises(OutOfMemoryAdvice) as err:
        with oom_advice("synthesis", advice):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert asked and err.value.__cause__ is None and err.value.__suppress_context__
    assert str(err.value) == ("synthesis ran out of GPU memory. Try:\n  - lower max_model_len to 2,592"
                              "\n  - use 25 steps")


def test_other_errors_pass_through():
    with pytest.raises(ValueError, match="bad"):
        with oom_advice("x", []):
            raise ValueError("bad")
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
