"""Slicer's Reload re-reads only the module file; the extension's Lib packages must be forgotten with it.

SlicerNNUNet and SlicerMONAIAuto3DSeg do the same. Every module drops all three packages: each one
imports the core, so a stale copy of any of them would keep the old core alive.
"""

from __future__ import annotations

import sys

LIBRARY_PACKAGES = ("SternumSSMLib", "SternumLandmarksLib", "SternumShapeModelLib")


def library_modules() -> list[str]:
    """The names of the loaded modules of the extension's Lib packages."""
    return [name for name in sys.modules if name.partition(".")[0] in LIBRARY_PACKAGES]


def forget_library_packages() -> None:
    """Drop the Lib packages from ``sys.modules``, so the module file's next imports read the edited files."""
    for name in library_modules():
        del sys.modules[name]
