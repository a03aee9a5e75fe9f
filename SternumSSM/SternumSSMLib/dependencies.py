"""First use of a module: the Python packages it needs beyond Slicer's own, installed only after asking.

Torch comes through the PyTorch extension (it picks the build that matches the machine); the rest
through pip. Both modules call :func:`ensure_packages` with their own requirements; the Slicer
dialogs and installers are passed in, so the decision logic runs under pytest. Never called at import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping


def ensure_packages(
    requirements: Mapping[str, str],
    purpose: str,
    confirm: Callable[[str], bool],
    pip_install: Callable[[str], None],
    install_torch: Callable[[], bool],
) -> bool:
    """True when torch and every ``{import name: pip requirement}`` can be imported, installing what is
    missing after one question; False when the user declines (nothing is installed then)."""
    if importlib.util.find_spec("torch") is None and not install_torch():
        return False
    missing = [requirement for module, requirement in requirements.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return True
    if not confirm(f"{purpose} needs {', '.join(missing)}. Install now?"):
        return False
    for requirement in missing:
        pip_install(requirement)
    importlib.invalidate_caches()
    return True


def ensure_packages_in_slicer(requirements: Mapping[str, str], purpose: str) -> bool:
    """:func:`ensure_packages` with Slicer's confirmation dialog, pip and the PyTorch extension."""
    import slicer

    def install_torch() -> bool:
        import PyTorchUtils

        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        return torch_logic.torchInstalled() or bool(torch_logic.installTorch(askConfirmation=True))

    return ensure_packages(
        requirements, purpose, slicer.util.confirmOkCancelDisplay, slicer.util.pip_install, install_torch
    )
