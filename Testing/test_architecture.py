"""The packages depend one way, read from the code's own imports (``ast``, imports inside functions and
``if TYPE_CHECKING:`` blocks included), so a late ``import`` tucked into a function cannot hide a back edge.

    SternumShapeModelLib  ->  SternumLandmarksLib  ->  SternumSSMLib (shared core + segmentation)

``SternumSSMLib/cli.py``, the ``sternum-ssm`` command, is the one core file that may reach up: it wires
the commands of both libraries into one entry point. The scene's node attribute names, shared by both
modules and the export, are spelt in ``SternumSSMLib/scene_contract.py`` alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "SternumSSMLib": REPO / "SternumSSM" / "SternumSSMLib",
    "SternumLandmarksLib": REPO / "SternumLandmarks" / "SternumLandmarksLib",
    "SternumShapeModelLib": REPO / "SternumShapeModel" / "SternumShapeModelLib",
}
SLICER_MODULE_FILES = (REPO / "SternumSSM" / "SternumSSM.py", REPO / "SternumLandmarks" / "SternumLandmarks.py")
# Each package and the packages it must never import.
LAYERS = {
    "SternumSSMLib": ("SternumLandmarksLib", "SternumShapeModelLib"),
    "SternumLandmarksLib": ("SternumShapeModelLib",),
    "SternumShapeModelLib": (),
}
ENTRY_POINTS = {"SternumSSMLib.cli"}
SCENE_NAME = re.compile(r"Sternum(SSM|Landmarks)\.[A-Z]\w*")  # "SternumSSM.SourceVolume", not "SternumSSM.ui"


def module_files(packages: dict[str, Path] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the library packages."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names, relative imports made absolute.
    ``from .x import y`` gives both ``pkg.x`` and ``pkg.x.y`` (y may be a submodule)."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, set[str]]:
    """Library module -> the library modules it imports."""
    modules = module_files(packages)
    return {
        module: {name for name in imported_names(module, path) if name in modules and name != module}
        for module, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected groups of two or more modules (Tarjan), each one import circle or a knot of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while not group or module not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(frozenset(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import from a package into one it must never import."""
    problems = []
    for module, imported in sorted(graph.items()):
        forbidden = LAYERS[module.partition(".")[0]]
        if module in ENTRY_POINTS:
            continue
        problems += [f"{module} -> {name}" for name in sorted(imported) if name.partition(".")[0] in forbidden]
    return problems


def test_every_library_package_is_read():
    modules = module_files()
    for package in PACKAGES:
        assert package in modules, f"{package}/__init__.py is missing"
    assert "SternumSSMLib.markups" in modules and "SternumSSMLib.cli" in modules


def test_the_core_never_imports_the_packages_built_on_it():
    assert upward_imports(import_graph()) == []


def test_no_import_circle_between_library_modules():
    assert [sorted(group) for group in circles(import_graph())] == []


def test_scene_attribute_names_are_spelt_only_in_the_scene_contract():
    """A node attribute or reference name ("SternumSSM.SourceVolume") written anywhere else would let the
    modules drift apart; everyone imports it from ``SternumSSMLib.scene_contract``."""
    contract = PACKAGES["SternumSSMLib"] / "scene_contract.py"
    files = [*module_files().values(), *SLICER_MODULE_FILES]
    spelt = [
        f"{path.relative_to(REPO)}:{node.lineno} {node.value}"
        for path in files
        if path != contract
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SCENE_NAME.fullmatch(node.value)
    ]
    assert spelt == []


def write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {package: root / package for package in PACKAGES}


def test_an_import_hidden_in_a_function_counts_and_the_entry_point_may_reach_up(tmp_path):
    packages = write_package(
        tmp_path,
        {
            "SternumSSMLib/__init__.py": "",
            "SternumSSMLib/geometry.py": "",
            "SternumSSMLib/export.py": "def f():\n    from SternumLandmarksLib.nodes import x\n",
            "SternumSSMLib/cli.py": "from SternumLandmarksLib import nodes\n",
            "SternumLandmarksLib/__init__.py": "",
            "SternumLandmarksLib/nodes.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from SternumShapeModelLib.meshes import Mesh\n",
            "SternumShapeModelLib/__init__.py": "",
            "SternumShapeModelLib/meshes.py": "from SternumSSMLib import geometry\nfrom . import fit\n",
            "SternumShapeModelLib/fit.py": "from .meshes import Mesh\n",
        },
    )
    graph = import_graph(packages)
    assert upward_imports(graph) == [
        "SternumLandmarksLib.nodes -> SternumShapeModelLib.meshes",
        "SternumSSMLib.export -> SternumLandmarksLib.nodes",
    ]
    assert circles(graph) == [frozenset({"SternumShapeModelLib.meshes", "SternumShapeModelLib.fit"})]
