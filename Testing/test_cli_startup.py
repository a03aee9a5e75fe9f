"""``sternum-ssm`` starts fast: building the parser (``--help``, and before every command) imports no library.

Each command imports its libraries when it runs (issue 17, command start-up). The check runs in a fresh
interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# slicer and vtk cost about 1 s, torch and nnU-Net more, scipy.ndimage 0.3 s; numpy and SimpleITK together
# 0.2 s of the 0.5 s that --help may take.
LIBRARIES = ("slicer", "vtk", "vtkmodules", "torch", "nnunetv2", "scipy", "SimpleITK", "numpy")


def libraries_imported_by(argv: list[str]) -> list[str]:
    code = (
        "import json, sys\n"
        "from SternumSSMLib.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(completed.stdout.splitlines()[-1]))
    return sorted(loaded & set(LIBRARIES))


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["predict", "--help"], ["batch", "--help"]])
def test_parsing_the_command_line_imports_no_library(argv):
    assert libraries_imported_by(argv) == []


def test_a_bad_phantom_format_is_refused_before_any_phantom_is_made(tmp_path, capsys):
    from SternumSSMLib.cli import main

    assert main(["phantom", "--output", str(tmp_path), "--image-format", "png"]) == 2
    assert "Image format 'png' is not supported" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
