"""First use of a module feature: the Python packages it needs beyond Slicer's own, installed only after asking.

Torch comes through the PyTorch extension (it picks the build that matches the machine); the rest through
pip, constrained to every version already installed, so a first-use install can never replace a package
that Slicer bundles (a loaded scipy cannot be upgraded in a running Slicer) nor the extension's torch.

The module files call :func:`ensure_in_slicer` with a feature name, inside the action that needs it and
never at import. The decision logic is :func:`ensure_feature`, which takes the dialog and the installers
as arguments so it runs under pytest. The pins below are the project's one source for them:
Testing/test_dependencies.py checks that pyproject.toml and the lock agree, and resolves exactly these
requirements against Slicer 5.10's bundled packages (constraints-slicer-5.10.txt).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NNUNET = "nnunetv2==2.8.1"
PSUTIL = "psutil>=5.9"  # the background runs kill the worker's process tree with it, on every platform
MATPLOTLIB = "matplotlib>=3.8"
# The shape model: Procrustes and non-rigid ICP (trimesh, rtree for its proximity queries), FE mesh formats.
SHAPE_MODEL = ("trimesh>=4.0", "rtree>=1.0", "meshio>=5.3")
# nnunetv2 2.8.1's own bounds on torch: the PyTorch extension is asked for a torch inside them.
TORCH_FOR_NNUNET = ">=2.1.2,!=2.9.*"
# The landmark network is plain torch.nn; weights_only loading arrived in torch 1.13, "same" padding earlier.
TORCH_FOR_LANDMARKS = ">=2.1"

PYTORCH_EXTENSION_MISSING = (
    "{purpose} needs PyTorch, which Slicer gets from the PyTorch extension, and that extension is not "
    "installed. Install the PyTorch extension from the Extensions Manager (View > Extensions Manager, "
    'search "PyTorch"), restart Slicer and try again.'
)


class DependencyError(RuntimeError):
    """A feature's packages cannot be provided without breaking what Slicer or the PyTorch extension installed."""


@dataclass(frozen=True)
class Feature:
    purpose: str
    requirements: tuple[str, ...]  # pip requirements
    torch: str | None  # version specifier asked of the PyTorch extension; None when torch is not needed


FEATURES: dict[str, Feature] = {
    "segmentation": Feature("nnU-Net segmentation", (NNUNET, PSUTIL), TORCH_FOR_NNUNET),
    "landmarks": Feature("The landmark network", (PSUTIL,), TORCH_FOR_LANDMARKS),
    "dataset_summary": Feature("The dataset summary", (MATPLOTLIB,), None),
    "shape_model": Feature("The shape model", (*SHAPE_MODEL, PSUTIL, MATPLOTLIB), None),
}


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_satisfied(requirement: str, version_of: Callable[[str], str | None] = installed_version) -> bool:
    parsed = Requirement(requirement)
    version = version_of(parsed.name)
    return version is not None and parsed.specifier.contains(version, prereleases=True)


def installed_pins(excluded: set[str]) -> list[str]:
    """``name==version`` for every installed distribution except ``excluded`` (canonical names).

    The first distribution of a name on sys.path wins, as it is the one Python imports.
    """
    pins: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if not name or canonicalize_name(name) in excluded or canonicalize_name(name) in pins:
            continue
        pins[canonicalize_name(name)] = f"{name}=={distribution.version}"
    return sorted(pins.values())


def ensure_feature(
    feature: str,
    confirm: Callable[[str], bool],
    pip_install: Callable[[list[str]], None],
    install_torch: Callable[[str, str], bool],
    version_of: Callable[[str], str | None] = installed_version,
) -> bool:
    """True when everything ``feature`` needs is installed, installing what is missing after one question.

    False when the user declines (nothing is installed then). ``install_torch(specifier, purpose)`` asks the
    PyTorch extension; ``pip_install`` gets pip's arguments, including a constraints file that pins every
    installed distribution, so only the missing packages and their missing dependencies are added.
    """
    if feature not in FEATURES:
        raise ValueError(f"Unknown feature {feature!r}; choose one of {', '.join(FEATURES)}.")
    spec = FEATURES[feature]
    if spec.torch is not None:
        torch_version = version_of("torch")
        if torch_version is None:
            if not install_torch(spec.torch, spec.purpose):
                return False
        elif not is_satisfied(f"torch{spec.torch}", version_of):
            raise DependencyError(
                f"{spec.purpose} needs torch{spec.torch}, but torch {torch_version} is installed. In the PyTorch "
                f"Utils module, uninstall torch, restart Slicer, then install with version requirement {spec.torch}."
            )
    missing = [requirement for requirement in spec.requirements if not is_satisfied(requirement, version_of)]
    if not missing:
        return True
    if not confirm(
        f"{spec.purpose} needs {', '.join(missing)}. Install now? Packages already installed, Slicer's own "
        "and torch among them, stay as they are."
    ):
        return False
    pins = installed_pins({canonicalize_name(Requirement(requirement).name) for requirement in missing})
    handle, constraints = tempfile.mkstemp(prefix="sternum-constraints-", suffix=".txt")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write("\n".join(pins) + "\n")
        pip_install([*missing, "--constraint", constraints])
    finally:
        Path(constraints).unlink(missing_ok=True)
    importlib.invalidate_caches()
    return True


def torch_from_extension(specifier: str, purpose: str) -> bool:
    """Install torch through the PyTorch extension (it asks the user first); False when declined."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise DependencyError(PYTORCH_EXTENSION_MISSING.format(purpose=purpose)) from error
    logic = PyTorchUtils.PyTorchUtilsLogic()
    return logic.installTorch(askConfirmation=True, torchVersionRequirement=specifier) is not None


def ensure_in_slicer(feature: str) -> bool:
    """:func:`ensure_feature` with Slicer's confirmation dialog, Slicer's pip and the PyTorch extension.

    Features: "segmentation" (nnU-Net), "landmarks" (the landmark network), "dataset_summary" (matplotlib),
    "shape_model" (trimesh, rtree, meshio).
    Raises :class:`DependencyError` with the fix when the PyTorch extension is missing or its torch is unusable.
    """
    import slicer

    return ensure_feature(feature, slicer.util.confirmOkCancelDisplay, slicer.util.pip_install, torch_from_extension)
