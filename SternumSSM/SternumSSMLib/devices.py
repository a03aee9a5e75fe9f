"""Where PyTorch runs: the device choices every command and both modules offer, and the device each one means."""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["auto", "cuda", "mps", "cpu"]
DEVICES: tuple[Device, ...] = get_args(Device)  # for argparse choices and the modules' device menus


def resolve_device(device: Device):
    """The ``torch.device`` for a choice; "auto" takes CUDA, then Apple's MPS, then the CPU."""
    import torch

    if device not in DEVICES:
        raise ValueError(f"Device {device!r} must be one of {', '.join(DEVICES)}.")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("Device 'cuda' was requested but no CUDA GPU is available; choose 'auto' or 'cpu'.")
    return torch.device(device)
