"""The one place a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``) becomes a torch device.

Training, evaluation, prediction and the MLflow model all call :func:`resolve_device`, so a
device that is not there is the same one-line error everywhere (exit 2 from the CLI),
raised before any model is built rather than as a CUDA ``RuntimeError`` mid-run.
"""

from __future__ import annotations

import torch

from refsam.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""Device names the CLI's ``--device`` accepts (``cuda:N`` is accepted by the library too)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``; ``cuda`` / ``cuda:N`` when present.

    Raises:
        ConfigError: a CUDA device that this machine does not have, or an unknown name.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        _, colon, index = name.partition(":")
        if colon and not index.isdigit():
            raise ConfigError(f"device {name!r}: expected cuda or cuda:<index>")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r}: no CUDA device is available on this machine (use cpu or auto)"
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s)")
        return torch.device(name)
    raise ConfigError(
        f"device {name!r}: expected one of {', '.join(DEVICE_CHOICES)} or cuda:<index>"
    )
