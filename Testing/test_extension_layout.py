"""The Slicer extension layout, checked without Slicer (the checks are in extension_checks.py).

The tests on the real tree assert that each check finds no problem; the tests at the end feed each
check a broken copy and assert that it reports the breakage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from extension_checks import (
    MODULES,
    REPO,
    cmake_variables,
    extension_problems,
    module_class_problems,
    module_folders,
    module_listing_problems,
    parse_cmake,
    png_size,
    ui_problems,
)

# ---------------------------------------------------------------------------
# The real tree.
# ---------------------------------------------------------------------------


def test_extension_cmakelists_builds_every_module() -> None:
    assert module_folders(REPO) == sorted(MODULES)
    assert extension_problems(REPO) == []


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_lists_exactly_the_shipped_files(module: str) -> None:
    assert module_listing_problems(REPO / module) == []


def test_sternum_ssm_ships_the_anatomy_data() -> None:
    # The anatomy JSON files are read at run time; forgetting them breaks every export.
    listed = parse_cmake((REPO / "SternumSSM" / "CMakeLists.txt").read_text())
    resources = cmake_variables(listed)["MODULE_PYTHON_RESOURCES"]
    assert {"SternumSSMLib/data/anatomy.json", "SternumSSMLib/data/landmark_protocol.json"} <= set(resources)


@pytest.mark.parametrize("module", MODULES)
def test_module_ui_matches_module_code(module: str) -> None:
    ui_file = REPO / module / "Resources" / "UI" / f"{module}.ui"
    assert ui_problems(ui_file, REPO / module / f"{module}.py") == []


@pytest.mark.parametrize("module", MODULES)
def test_module_file_follows_the_template_order(module: str) -> None:
    assert module_class_problems(REPO / module / f"{module}.py") == []


@pytest.mark.parametrize(
    "icon",
    [
        "SternumSSM/Resources/Icons/SternumSSM.png",
        "SternumLandmarks/Resources/Icons/SternumLandmarks.png",
        "Resources/Icons/SternumSSM.png",  # the extension's icon in the Extensions Manager
    ],
)
def test_icons_are_128_pixel_pngs(icon: str) -> None:
    assert png_size(REPO / icon) == (128, 128)


# ---------------------------------------------------------------------------
# Each check fails when it should.
# ---------------------------------------------------------------------------


def test_parse_cmake_handles_quotes_comments_and_list_variables() -> None:
    commands = parse_cmake(
        "# comment (with parentheses)\n"
        "set(NAME Demo)\n"
        'set(DESCRIPTION "a (quoted) text # not a comment")\n'
        "set(FILES\n  ${NAME}.py # trailing comment\n  ${NAME}Lib/a.py\n  )\n"
        'macro_call(SCRIPTS ${FILES} QUOTED "${FILES}")\n'
    )
    assert cmake_variables(commands)["DESCRIPTION"] == ["a (quoted) text # not a comment"]
    assert commands[-1].args == ("SCRIPTS", "Demo.py", "DemoLib/a.py", "QUOTED", "Demo.py;DemoLib/a.py")
    with pytest.raises(ValueError, match="unterminated"):
        parse_cmake("set(A b\n")


def _copy_module(tmp_path: Path, module: str) -> Path:
    copy = tmp_path / module
    shutil.copytree(REPO / module, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_listing_check_reports_an_unlisted_file(tmp_path: Path) -> None:
    module = _copy_module(tmp_path, "SternumSSM")
    _edit(module / "CMakeLists.txt", "  ${MODULE_NAME}Lib/anatomy.py\n", "")
    assert any("SternumSSMLib/anatomy.py is not listed" in p for p in module_listing_problems(module))


def test_listing_check_reports_a_new_file_nobody_listed(tmp_path: Path) -> None:
    module = _copy_module(tmp_path, "SternumLandmarks")
    (module / "SternumLandmarksLib" / "sub").mkdir()
    (module / "SternumLandmarksLib" / "sub" / "new.py").write_text("")
    (module / "SternumLandmarksLib" / "__pycache__").mkdir(exist_ok=True)
    (module / "SternumLandmarksLib" / "__pycache__" / "cached.py").write_text("")
    problems = module_listing_problems(module)
    assert any("SternumLandmarksLib/sub/new.py is not listed" in p for p in problems)
    assert not any("__pycache__" in p for p in problems)


def test_listing_check_reports_a_listed_file_that_is_missing(tmp_path: Path) -> None:
    module = _copy_module(tmp_path, "SternumSSM")
    (module / "SternumSSMLib" / "data" / "anatomy.json").unlink()
    assert "SternumSSM: SternumSSMLib/data/anatomy.json is listed but does not exist" in module_listing_problems(module)


def test_listing_check_reports_python_in_resources_and_a_missing_unittest(tmp_path: Path) -> None:
    module = _copy_module(tmp_path, "SternumLandmarks")
    _edit(module / "CMakeLists.txt", "  ${MODULE_NAME}Lib/__init__.py\n", "")
    _edit(module / "CMakeLists.txt", "  Resources/UI/", "  ${MODULE_NAME}Lib/__init__.py\n  Resources/UI/")
    _edit(module / "CMakeLists.txt", "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)", "")
    problems = module_listing_problems(module)
    assert any("SternumLandmarksLib/__init__.py is in RESOURCES" in p for p in problems)
    assert "SternumLandmarks: no slicer_add_python_unittest(SCRIPT SternumLandmarks.py)" in problems


def _copy_extension(tmp_path: Path) -> Path:
    shutil.copy(REPO / "CMakeLists.txt", tmp_path / "CMakeLists.txt")
    shutil.copytree(REPO / "Resources", tmp_path / "Resources")
    for module in MODULES:
        (tmp_path / module).mkdir()
        (tmp_path / module / f"{module}.py").write_text("")
        (tmp_path / module / "CMakeLists.txt").write_text("")
    return tmp_path


def test_extension_check_reports_a_module_folder_not_added(tmp_path: Path) -> None:
    root = _copy_extension(tmp_path)
    assert extension_problems(root) == []
    _edit(root / "CMakeLists.txt", "add_subdirectory(SternumLandmarks)", "")
    assert extension_problems(root) == ["top level: module folder SternumLandmarks is not added by add_subdirectory()"]


def test_extension_check_reports_wrong_metadata_and_order(tmp_path: Path) -> None:
    root = _copy_extension(tmp_path)
    _edit(root / "CMakeLists.txt", 'set(EXTENSION_DEPENDS "PyTorch")', 'set(EXTENSION_DEPENDS "NA")')
    _edit(root / "CMakeLists.txt", 'set(EXTENSION_CATEGORY "Segmentation")', 'set(EXTENSION_CATEGORY "Examples")')
    _edit(root / "CMakeLists.txt", "add_subdirectory(SternumSSM)\n", "")
    (root / "CMakeLists.txt").write_text((root / "CMakeLists.txt").read_text() + "add_subdirectory(SternumSSM)\n")
    (root / "Resources" / "Icons" / "SternumSSM.png").unlink()
    problems = extension_problems(root)
    assert any("EXTENSION_DEPENDS" in p for p in problems)
    assert any("EXTENSION_CATEGORY" in p for p in problems)
    assert any("in that order" in p for p in problems)
    assert any("EXTENSION_ICONURL points to Resources/Icons/SternumSSM.png" in p for p in problems)


def _copy_ui_and_module(tmp_path: Path, module: str) -> tuple[Path, Path]:
    ui_file = tmp_path / f"{module}.ui"
    module_file = tmp_path / f"{module}.py"
    shutil.copy(REPO / module / "Resources" / "UI" / f"{module}.ui", ui_file)
    shutil.copy(REPO / module / f"{module}.py", module_file)
    return ui_file, module_file


def test_ui_check_reports_a_widget_the_code_expects_but_the_ui_lacks(tmp_path: Path) -> None:
    ui_file, module_file = _copy_ui_and_module(tmp_path, "SternumSSM")
    _edit(ui_file, 'name="segmentButton"', 'name="runButton"')
    assert ui_problems(ui_file, module_file) == [
        "SternumSSM.ui: SternumSSM.py uses self.ui.segmentButton, which is not a widget in the .ui"
    ]


def test_ui_check_reports_an_unknown_parameter_name(tmp_path: Path) -> None:
    ui_file, module_file = _copy_ui_and_module(tmp_path, "SternumLandmarks")
    _edit(ui_file, "<string>protocolFile</string>", "<string>protocolPath</string>")
    problems = ui_problems(ui_file, module_file)
    assert len(problems) == 1
    assert "binds SlicerParameterName 'protocolPath'" in problems[0]


def test_ui_check_reports_undeclared_classes_duplicates_and_missing_scene_connections(tmp_path: Path) -> None:
    ui_file, module_file = _copy_ui_and_module(tmp_path, "SternumSSM")
    _edit(ui_file, 'class="QCheckBox"', 'class="ctkCheckBox"')
    _edit(ui_file, 'name="roiLabel"', 'name="presetLabel"')
    _edit(ui_file, "<receiver>roiSelector</receiver>", "<receiver>inputVolumeSelector</receiver>")
    problems = ui_problems(ui_file, module_file)
    assert any("class ctkCheckBox, neither a standard Qt widget nor declared" in p for p in problems)
    assert any("object name presetLabel is used more than once" in p for p in problems)
    assert any("roiSelector gets no mrmlSceneChanged" in p for p in problems)


def test_ui_check_reports_malformed_xml(tmp_path: Path) -> None:
    ui_file, module_file = _copy_ui_and_module(tmp_path, "SternumSSM")
    _edit(ui_file, "</ui>", "")
    assert ui_problems(ui_file, module_file)[0].startswith("SternumSSM.ui: not well-formed XML")


def test_class_check_reports_wrong_order_and_missing_decorator(tmp_path: Path) -> None:
    module_file = tmp_path / "Demo.py"
    module_file.write_text(
        "from slicer.i18n import tr as _\n"
        "class Demo(ScriptedLoadableModule): pass\n"
        "class DemoWidget(ScriptedLoadableModuleWidget): pass\n"
        "class DemoParameterNode: pass\n"
        "class DemoLogic(ScriptedLoadableModuleLogic): pass\n"
        "class DemoTest(ScriptedLoadableModuleTest): pass\n"
    )
    assert module_class_problems(module_file) == [
        "Demo.py: DemoParameterNode must be decorated with @parameterNodeWrapper",
        "Demo.py: classes must come in the order Demo, DemoParameterNode, DemoWidget, DemoLogic, DemoTest",
    ]


def test_class_check_reports_a_missing_class_and_untranslated_strings(tmp_path: Path) -> None:
    module_file = tmp_path / "Demo.py"
    module_file.write_text(
        "from slicer.parameterNodeWrapper import parameterNodeWrapper\n"
        "class Demo(ScriptedLoadableModule): pass\n"
        "@parameterNodeWrapper\nclass DemoParameterNode: pass\n"
        "class DemoWidget(ScriptedLoadableModuleWidget): pass\n"
        "class DemoLogic(object): pass\n"
    )
    assert module_class_problems(module_file) == [
        "Demo.py: DemoLogic must derive from ScriptedLoadableModuleLogic",
        "Demo.py: no class DemoTest",
        "Demo.py: missing 'from slicer.i18n import tr as _'",
    ]
