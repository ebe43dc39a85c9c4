"""One validating ``resolve_device`` for training, evaluation, prediction and the MLflow model."""

from __future__ import annotations

import pytest
import torch

from refsam.errors import ConfigError, UserError
from refsam.modeling.device import resolve_device

NO_GPU = not torch.cuda.is_available()


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "cuda:", "CPU"])
def test_unknown_names_are_one_line_user_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="expected") as info:
        resolve_device(name)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_a_gpu_is_a_user_error(name: str | torch.device) -> None:
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_device(name)


@pytest.mark.skipif(NO_GPU, reason="needs a GPU")
def test_cuda_with_a_gpu() -> None:
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_there_is_one_resolve_device() -> None:
    from refsam.eval import predictor
    from refsam.modeling import checkpoint as state
    from refsam.train import distributed

    assert predictor.resolve_device is distributed.resolve_device is state.resolve_device
    assert predictor.resolve_device is resolve_device
