"""What the Slicer ExtensionsIndex needs to list the extension: a LICENSE file at the root, a catalog entry in
the index's format that agrees with the top-level CMakeLists.txt, and Slicer 5.10 as the stated minimum."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CMAKE = (ROOT / "CMakeLists.txt").read_text()
# Properties of Slicer's slicer-extension-catalog-entry-schema-v1.0.1.json (Schemas/ at tag v5.10.0), which
# allows no others and requires the first three.
REQUIRED = {"$schema", "category", "scm_url"}
ALLOWED = REQUIRED | {"scm_revision", "scm_type", "build_dependencies", "build_subdirectory", "enabled", "tier"}


def cmake_setting(name: str) -> str:
    return re.search(rf'^set\({name} "([^"]*)"\)', CMAKE, re.M)[1]


def catalog_entry() -> dict:
    project = re.search(r"^project\((\w+)\)", CMAKE, re.M)[1]
    return json.loads((ROOT / "ExtensionsIndex" / f"{project}.json").read_text())


def test_catalog_entry_has_the_index_format_and_agrees_with_cmake():
    entry = catalog_entry()
    assert REQUIRED <= entry.keys() <= ALLOWED
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    # Torch comes from the PyTorch extension, so the index must build that one first.
    assert entry["build_dependencies"] == ["PyTorch"] == cmake_setting("EXTENSION_DEPENDS").split()
    assert entry["category"] == cmake_setting("EXTENSION_CATEGORY")
    assert entry["scm_url"] == cmake_setting("EXTENSION_HOMEPAGE")
    assert entry["scm_url"].rsplit("/", 1)[1].startswith("Slicer"), "the index wants repositories named Slicer*"
    assert entry["build_subdirectory"] == "." and isinstance(entry["tier"], int)


def test_license_file_is_the_apache_license_that_pyproject_declares():
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]


def test_slicer_5_10_is_the_stated_minimum():
    assert re.search(r'if\(Slicer_VERSION VERSION_LESS "5\.10"\)\s*message\(FATAL_ERROR', CMAKE)
    assert "cmake_minimum_required(VERSION 3.20.6" in CMAKE  # Slicer 5.10's own minimum
    assert "3D Slicer 5.10 or later" in (ROOT / "README.md").read_text()
