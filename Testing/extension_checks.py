"""Checks of the Slicer extension layout that run without Slicer (used by test_extension_layout.py).

Slicer packages an extension from its CMakeLists.txt files. A file missing from
them is silently left out of the installed extension, and a widget name the
module's Python expects but its .ui file lacks only fails when a user opens the
module. These checks catch both on any machine.

Each check is a function that returns a list of problems (empty when all is well).
"""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("SternumSSM", "SternumLandmarks", "SternumShapeModel")
EXTENSION_NAME = "SternumSSM"

# File kinds a scripted module ships; anything of these kinds under a module folder must be listed.
SHIPPED_SUFFIXES = frozenset({".py", ".ui", ".png", ".json", ".md", ".pth"})
IGNORED_DIRS = frozenset({"__pycache__"})

# Standard Qt classes a Slicer .ui may use without declaring them in <customwidgets>.
QT_WIDGET_CLASSES = frozenset(
    {
        "QWidget", "QFrame", "QGroupBox", "QLabel", "QPushButton", "QToolButton", "QRadioButton", "QCheckBox",
        "QComboBox", "QLineEdit", "QTextEdit", "QPlainTextEdit", "QSpinBox", "QDoubleSpinBox", "QSlider",
        "QProgressBar", "QListWidget", "QTableWidget", "QTreeWidget", "QListView", "QTableView", "QTreeView",
        "QTabWidget", "QStackedWidget", "QScrollArea", "QSplitter", "QDialogButtonBox",
    }
)  # fmt: skip

EXTENSION_METADATA = (
    "EXTENSION_HOMEPAGE",
    "EXTENSION_CATEGORY",
    "EXTENSION_CONTRIBUTORS",
    "EXTENSION_DESCRIPTION",
    "EXTENSION_ICONURL",
    "EXTENSION_SCREENSHOTURLS",
    "EXTENSION_DEPENDS",
)
_COMMAND_START = re.compile(r"([A-Za-z_]\w*)\s*\(")
RAW_GITHUB_URL = re.compile(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(?P<path>.+)")


# ---------------------------------------------------------------------------
# A small CMake reader: enough for set(), add_subdirectory() and macro calls.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CMakeCommand:
    name: str  # lower case: CMake command names are case-insensitive
    args: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class _Token:
    text: str
    quoted: bool


def _read_arguments(text: str, start: int) -> tuple[list[_Token], int]:
    """Arguments from just after a command's "(" to its matching ")"; returns them and the index after it."""
    tokens: list[_Token] = []
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            i = _end_of_line(text, i)
        elif char == '"':
            i += 1
            value = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                value.append(text[i])
                i += 1
            tokens.append(_Token("".join(value), quoted=True))
            i += 1
        elif char == "(":
            depth += 1  # nested parentheses, as in if((A) OR B): grouping only, not an argument
            i += 1
        elif char == ")":
            if depth == 0:
                return tokens, i + 1
            depth -= 1
            i += 1
        else:
            end = i
            while end < len(text) and not text[end].isspace() and text[end] not in '()#"':
                end += 1
            tokens.append(_Token(text[i:end], quoted=False))
            i = end
    raise ValueError("unterminated command: missing ')'")


def _end_of_line(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _expand(token: _Token, variables: dict[str, list[str]]) -> list[str]:
    """CMake variable expansion: an unquoted ${LIST} becomes several arguments, a quoted one stays one."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return ";".join(variables[name]) if name in variables else match.group(0)

    value = re.sub(r"\$\{(\w+)\}", substitute, token.text)
    if token.quoted:
        return [value]
    return [part for part in value.split(";") if part]


def parse_cmake(text: str) -> list[CMakeCommand]:
    """The commands of a CMake file in order, with ${VAR} expanded for variables set() earlier in it."""
    commands: list[CMakeCommand] = []
    variables: dict[str, list[str]] = {}
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            i = _end_of_line(text, i)
        else:
            match = _COMMAND_START.match(text, i)
            if match is None:
                line = text.count("\n", 0, i) + 1
                raise ValueError(f"line {line}: expected a command, found {text[i : i + 20]!r}")
            tokens, i = _read_arguments(text, match.end())
            args = [arg for token in tokens for arg in _expand(token, variables)]
            name = match.group(1).lower()
            if name == "set" and args:
                variables[args[0]] = args[1:]
            commands.append(CMakeCommand(name, tuple(args), text.count("\n", 0, match.start()) + 1))
    return commands


def cmake_variables(commands: list[CMakeCommand]) -> dict[str, list[str]]:
    return {command.args[0]: list(command.args[1:]) for command in commands if command.name == "set" and command.args}


def keyword_sections(args: tuple[str, ...], keywords: set[str]) -> dict[str, list[str]]:
    """Split a macro's arguments into keyword -> values, e.g. SCRIPTS a.py b.py RESOURCES x.ui."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for arg in args:
        if arg in keywords:
            current = sections.setdefault(arg, [])
        elif current is not None:
            current.append(arg)
    return sections


# ---------------------------------------------------------------------------
# Checks. Each returns a list of human-readable problems.
# ---------------------------------------------------------------------------


def shipped_files(module_dir: Path) -> set[str]:
    """Files under a module folder that Slicer would need at run time, relative, with forward slashes."""
    found = set()
    for path in module_dir.rglob("*"):
        relative = path.relative_to(module_dir)
        if path.is_file() and path.suffix in SHIPPED_SUFFIXES and not IGNORED_DIRS.intersection(relative.parts):
            found.add(relative.as_posix())
    return found


def module_listing_problems(module_dir: Path) -> list[str]:
    """The module CMakeLists.txt lists exactly the files the module ships, and builds them as Slicer expects."""
    name = module_dir.name
    cmake_file = module_dir / "CMakeLists.txt"
    if not cmake_file.is_file():
        return [f"{name}: no CMakeLists.txt"]
    commands = parse_cmake(cmake_file.read_text())
    problems = []

    module_name = cmake_variables(commands).get("MODULE_NAME")
    if module_name != [name]:
        problems.append(f"{name}: MODULE_NAME is {module_name}, not the folder name {name}")

    builds = [c for c in commands if c.name == "slicermacrobuildscriptedmodule"]
    if len(builds) != 1:
        return [*problems, f"{name}: expected one slicerMacroBuildScriptedModule() call, found {len(builds)}"]
    sections = keyword_sections(builds[0].args, {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS"})
    if sections.get("NAME") != [name]:
        problems.append(f"{name}: slicerMacroBuildScriptedModule NAME is {sections.get('NAME')}")
    if "WITH_GENERIC_TESTS" not in sections:
        problems.append(f"{name}: slicerMacroBuildScriptedModule lacks WITH_GENERIC_TESTS")
    scripts = sections.get("SCRIPTS", [])
    resources = sections.get("RESOURCES", [])

    problems += _unittest_problems(name, commands)
    listed = scripts + resources
    problems += [f"{name}: {path} is listed twice" for path in sorted({p for p in listed if listed.count(p) > 1})]
    problems += [f"{name}: {path} is listed but does not exist" for path in listed if not (module_dir / path).is_file()]
    problems += [
        f"{name}: SCRIPTS lists {path}, which is not a .py file" for path in scripts if not path.endswith(".py")
    ]
    problems += [
        f"{name}: {path} is in RESOURCES; Python files go in SCRIPTS, which are byte-compiled"
        for path in resources
        if path.endswith(".py")
    ]
    problems += [
        f"{name}: {path} is not listed in {cmake_file.relative_to(module_dir.parent)}; it would be missing "
        "from the installed extension"
        for path in sorted(shipped_files(module_dir) - set(listed))
    ]
    for required, section in (
        (f"{name}.py", scripts),
        (f"{name}Lib/__init__.py", scripts),
        (f"Resources/UI/{name}.ui", resources),
        (f"Resources/Icons/{name}.png", resources),
    ):
        if required not in section:
            problems.append(f"{name}: {required} must be listed")
    return problems


def _unittest_problems(name: str, commands: list[CMakeCommand]) -> list[str]:
    """slicer_add_python_unittest(SCRIPT <module>.py) must sit inside if(BUILD_TESTING) ... endif()."""
    inside_build_testing = False
    for command in commands:
        if command.name == "if":
            inside_build_testing = command.args == ("BUILD_TESTING",)
        elif command.name == "endif":
            inside_build_testing = False
        elif command.name == "slicer_add_python_unittest" and command.args == ("SCRIPT", f"{name}.py"):
            return [] if inside_build_testing else [f"{name}: slicer_add_python_unittest is outside if(BUILD_TESTING)"]
    return [f"{name}: no slicer_add_python_unittest(SCRIPT {name}.py)"]


def module_folders(root: Path) -> list[str]:
    """Top-level folders that hold a scripted module, recognised by their <Folder>/<Folder>.py file."""
    return sorted(path.name for path in root.iterdir() if path.is_dir() and (path / f"{path.name}.py").is_file())


def extension_problems(root: Path) -> list[str]:
    """The top-level CMakeLists.txt is a complete Slicer extension that builds every module folder."""
    commands = parse_cmake((root / "CMakeLists.txt").read_text())
    variables = cmake_variables(commands)
    names = [command.name for command in commands]
    problems = []

    if ("project", (EXTENSION_NAME,)) not in [(c.name, c.args) for c in commands]:
        problems.append(f"top level: no project({EXTENSION_NAME})")
    problems += [f"top level: {key} is not set" for key in EXTENSION_METADATA if not variables.get(key)]
    if variables.get("EXTENSION_CATEGORY") != ["Segmentation"]:
        problems.append(f"top level: EXTENSION_CATEGORY is {variables.get('EXTENSION_CATEGORY')}, not Segmentation")
    depends = " ".join(variables.get("EXTENSION_DEPENDS", [])).split()
    if "PyTorch" not in depends:
        problems.append(f"top level: EXTENSION_DEPENDS {depends} lacks PyTorch (torch comes from that extension)")

    icon_url = " ".join(variables.get("EXTENSION_ICONURL", []))
    icon_match = RAW_GITHUB_URL.fullmatch(icon_url)
    if icon_match is None:
        problems.append(f"top level: EXTENSION_ICONURL {icon_url!r} is not a raw GitHub URL")
    elif not (root / icon_match["path"]).is_file():
        problems.append(f"top level: EXTENSION_ICONURL points to {icon_match['path']}, which is not in the repository")

    in_order = [
        ("find_package", ("Slicer", "REQUIRED")),
        ("include", ("${Slicer_USE_FILE}",)),
        ("include", ("${Slicer_EXTENSION_GENERATE_CONFIG}",)),
        ("include", ("${Slicer_EXTENSION_CPACK}",)),
    ]
    found = [(c.name, c.args) for c in commands]
    positions = [found.index(step) if step in found else -1 for step in in_order]
    problems += [
        f"top level: missing {n}({' '.join(a)})" for (n, a), pos in zip(in_order, positions, strict=True) if pos < 0
    ]
    if all(pos >= 0 for pos in positions):
        subdirectories = [i for i, name in enumerate(names) if name == "add_subdirectory"]
        if positions != sorted(positions) or any(not positions[1] < i < positions[2] for i in subdirectories):
            problems.append(
                "top level: expected find_package(Slicer), include(${Slicer_USE_FILE}), the add_subdirectory() "
                "calls, then the two Slicer_EXTENSION includes, in that order"
            )

    added = [c.args[0] for c in commands if c.name == "add_subdirectory" and c.args]
    problems += [
        f"top level: module folder {folder} is not added by add_subdirectory()"
        for folder in module_folders(root)
        if folder not in added
    ]
    problems += [
        f"top level: add_subdirectory({folder}) has no {folder}/CMakeLists.txt"
        for folder in added
        if not (root / folder / "CMakeLists.txt").is_file()
    ]
    return problems


def parameter_fields(module_source: str, module_name: str) -> set[str]:
    """Field names of the module's @parameterNodeWrapper class."""
    for node in ast.parse(module_source).body:
        if isinstance(node, ast.ClassDef) and node.name == f"{module_name}ParameterNode":
            return {
                statement.target.id
                for statement in node.body
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
            }
    return set()


def ui_attributes(module_source: str) -> set[str]:
    """Every name used as self.ui.<name> in the module file."""
    return {
        node.attr
        for node in ast.walk(ast.parse(module_source))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def ui_problems(ui_file: Path, module_file: Path) -> list[str]:
    """The .ui is valid Designer XML that loads in Slicer and matches what the module's Python expects of it."""
    label = ui_file.name
    try:
        root = ET.parse(ui_file).getroot()
    except ET.ParseError as error:
        return [f"{label}: not well-formed XML: {error}"]
    if root.tag != "ui" or root.get("version") != "4.0":
        return [f'{label}: root must be <ui version="4.0">, found <{root.tag} version={root.get("version")!r}>']
    top = root.find("widget")
    if top is None:
        return [f"{label}: no top-level widget"]
    problems = []
    module_name = module_file.stem
    if top.get("class") != "qMRMLWidget" or top.get("name") != module_name:
        problems.append(f"{label}: top widget must be qMRMLWidget named {module_name}")

    custom = {element.findtext("class") for element in root.iterfind("customwidgets/customwidget")}
    for element in root.iterfind("customwidgets/customwidget"):
        if element.findtext("extends") not in QT_WIDGET_CLASSES | custom:
            problems.append(f"{label}: custom widget {element.findtext('class')} extends an unknown class")

    widgets = list(root.iter("widget"))
    for widget in widgets:
        if widget.get("class") not in QT_WIDGET_CLASSES | custom:
            problems.append(
                f"{label}: widget {widget.get('name')} has class {widget.get('class')}, neither a standard Qt "
                "widget nor declared in <customwidgets>"
            )
    names = [element.get("name") for tag in ("widget", "layout", "spacer") for element in root.iter(tag)]
    problems += [
        f"{label}: object name {n} is used more than once" for n in sorted({n for n in names if names.count(n) > 1})
    ]

    scene_receivers = {
        connection.findtext("receiver")
        for connection in root.iterfind("connections/connection")
        if connection.findtext("sender") == top.get("name")
        and connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    for widget in widgets[1:]:
        if widget.get("class", "").startswith("qMRML") and widget.get("name") not in scene_receivers:
            problems.append(f"{label}: {widget.get('name')} gets no mrmlSceneChanged -> setMRMLScene connection")
        node_types = widget.findall("property[@name='nodeTypes']/stringlist/string")
        if widget.get("class") == "qMRMLNodeComboBox" and not node_types:
            problems.append(f"{label}: {widget.get('name')} has no nodeTypes")

    source = module_file.read_text()
    widget_names = {widget.get("name") for widget in widgets}
    problems += [
        f"{label}: {module_file.name} uses self.ui.{name}, which is not a widget in the .ui"
        for name in sorted(ui_attributes(source) - widget_names)
    ]
    fields = parameter_fields(source, module_name)
    for widget in widgets:
        parameter = widget.findtext("property[@name='SlicerParameterName']/string")
        if parameter is not None and parameter not in fields:
            problems.append(
                f"{label}: {widget.get('name')} binds SlicerParameterName {parameter!r}, which is not a field of "
                f"{module_name}ParameterNode ({', '.join(sorted(fields))})"
            )
    return problems


def _base_names(node: ast.ClassDef) -> set[str]:
    return {base.id if isinstance(base, ast.Name) else ast.unparse(base) for base in node.bases}


def _decorator_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        names.add(target.attr if isinstance(target, ast.Attribute) else ast.unparse(target))
    return names


def module_class_problems(module_file: Path) -> list[str]:
    """The module file follows the Slicer template: module, parameters, widget, logic, test, in that order."""
    name = module_file.stem
    tree = ast.parse(module_file.read_text())
    classes = {node.name: (index, node) for index, node in enumerate(tree.body) if isinstance(node, ast.ClassDef)}
    expected = (
        (name, "ScriptedLoadableModule", None),
        (f"{name}ParameterNode", None, "parameterNodeWrapper"),
        (f"{name}Widget", "ScriptedLoadableModuleWidget", None),
        (f"{name}Logic", "ScriptedLoadableModuleLogic", None),
        (f"{name}Test", "ScriptedLoadableModuleTest", None),
    )
    problems = []
    positions = []
    for class_name, base, decorator in expected:
        if class_name not in classes:
            problems.append(f"{module_file.name}: no class {class_name}")
            continue
        position, node = classes[class_name]
        positions.append(position)
        if base and base not in _base_names(node):
            problems.append(f"{module_file.name}: {class_name} must derive from {base}")
        if decorator and decorator not in _decorator_names(node):
            problems.append(f"{module_file.name}: {class_name} must be decorated with @{decorator}")
    if positions != sorted(positions):
        problems.append(f"{module_file.name}: classes must come in the order {', '.join(e[0] for e in expected)}")

    # User-visible strings are translated through _(), which must be Slicer's tr.
    imports_tr = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "slicer.i18n"
        and any(alias.name == "tr" and alias.asname == "_" for alias in node.names)
        for node in tree.body
    )
    if not imports_tr:
        problems.append(f"{module_file.name}: missing 'from slicer.i18n import tr as _'")
    return problems


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", header[16:24])
