"""First-use packages: one question, a constrained pip install, a clear error when the PyTorch extension is missing;
the pins agree with pyproject.toml and the lock; the first-use install leaves Slicer 5.10's bundled packages alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from SternumSSMLib.dependencies import FEATURES, DependencyError, ensure_feature, torch_from_extension

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
SLICER_CONSTRAINTS = ROOT / "constraints-slicer-5.10.txt"
# The torch (and its torchvision) that the PyTorch extension installs for TORCH_FOR_NNUNET today: the newest
# release inside nnunetv2's bounds, the same one the lock pins.
EXTENSION_TORCH = ("torch==2.13.0", "torchvision==0.28.0")


class Recorder:
    def __init__(self, answer: bool = True, torch_answer: bool = True) -> None:
        self.answer, self.torch_answer = answer, torch_answer
        self.questions: list[str] = []
        self.pip_calls: list[list[str]] = []
        self.constraints: list[str] = []
        self.torch_requests: list[str] = []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def pip_install(self, arguments: list[str]) -> None:
        self.pip_calls.append(arguments)
        self.constraints = Path(arguments[arguments.index("--constraint") + 1]).read_text().split()

    def install_torch(self, specifier: str, purpose: str) -> bool:
        self.torch_requests.append(specifier)
        return self.torch_answer


def versions(**installed: str):
    def version_of(distribution: str) -> str | None:
        return installed.get(canonicalize_name(distribution).replace("-", "_"))

    return version_of


def test_installed_packages_need_no_question():
    recorder = Recorder()
    installed = versions(torch="2.13.0+cu126", nnunetv2="2.8.1", psutil="7.0.0")
    assert ensure_feature("segmentation", recorder.confirm, recorder.pip_install, recorder.install_torch, installed)
    assert recorder.questions == [] and recorder.pip_calls == [] and recorder.torch_requests == []


def test_missing_packages_are_named_in_one_question_and_installed_under_the_installed_versions():
    recorder = Recorder()
    installed = versions(torch="2.13.0")
    assert ensure_feature("segmentation", recorder.confirm, recorder.pip_install, recorder.install_torch, installed)
    assert len(recorder.questions) == 1
    assert "nnunetv2==2.8.1" in recorder.questions[0] and "psutil" in recorder.questions[0]
    assert recorder.pip_calls[0][:2] == ["nnunetv2==2.8.1", "psutil>=5.9"]
    # Every distribution of this interpreter is pinned (numpy, scipy, torch: what Slicer or the extension put
    # there), except the ones being installed; the constraints file is gone afterwards.
    pinned = {canonicalize_name(line.split("==")[0]) for line in recorder.constraints}
    assert {"numpy", "scipy", "torch", "simpleitk"} <= pinned
    assert not {"nnunetv2", "psutil"} & pinned
    assert not Path(recorder.pip_calls[0][-1]).exists()


def test_declining_installs_nothing():
    recorder = Recorder(answer=False)
    assert not ensure_feature("dataset_summary", recorder.confirm, recorder.pip_install, recorder.install_torch,
                              versions())
    assert recorder.pip_calls == [] and recorder.torch_requests == []


def test_missing_torch_is_asked_of_the_pytorch_extension_with_nnunets_bounds():
    recorder = Recorder(torch_answer=False)
    assert not ensure_feature("segmentation", recorder.confirm, recorder.pip_install, recorder.install_torch,
                              versions())
    assert recorder.torch_requests == [">=2.1.2,!=2.9.*"] and recorder.pip_calls == []


def test_a_torch_that_nnunet_excludes_is_refused_with_the_fix():
    recorder = Recorder()
    with pytest.raises(DependencyError, match=r"torch 2\.9\.1 is installed.*PyTorch Utils"):
        ensure_feature("segmentation", recorder.confirm, recorder.pip_install, recorder.install_torch,
                       versions(torch="2.9.1"))
    assert recorder.pip_calls == []


def test_missing_pytorch_extension_says_how_to_install_it():
    """`import PyTorchUtils` fails here as in a Slicer without the extension."""
    recorder = Recorder()
    message = r"(?i)install the PyTorch extension from the Extensions Manager"
    with pytest.raises(DependencyError, match=message) as error:
        ensure_feature("landmarks", recorder.confirm, recorder.pip_install, torch_from_extension, versions())
    assert "No module named" not in str(error.value)


def test_unknown_feature_names_the_known_ones():
    with pytest.raises(ValueError, match="segmentation, landmarks, dataset_summary"):
        ensure_feature("segmentaton", bool, print, lambda *_: True)


# One source for the pins ------------------------------------------------------------------------------------

def project_dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in project["dependencies"]}


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match[1].split("[")[0])] = match[2]
    return pins


def test_first_use_pins_are_pyprojects():
    dependencies = project_dependencies()
    for feature in FEATURES.values():
        for line in feature.requirements:
            requirement = Requirement(line)
            assert str(dependencies[canonicalize_name(requirement.name)]) == str(requirement), line


def test_lock_pins_every_dependency_torch_on_the_cpu_wheel_and_no_cuda_package():
    pins = lock_pins()
    for name, requirement in project_dependencies().items():
        assert name in pins, f"{name} is in pyproject.toml but not in {LOCK.name}; run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    # The CPU build by its own name: a plain 2.13.0 from PyPI is the CUDA build, which --no-deps would leave
    # without its nvidia-* libraries.
    assert pins["torch"] == "2.13.0+cpu"
    assert not [name for name in pins if name.startswith("nvidia-") or name in ("triton", "torchvision")]
    assert "landmarker" not in pins


def test_make_setup_installs_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    setup = re.search(r"^\$\(STAMP\):.*?(?=^\S)", makefile, re.M | re.S)[0]
    assert re.search(r"^LOCK := requirements\.lock$", makefile, re.M)
    assert "pip install --quiet --no-deps -r $(LOCK)" in setup and "-c constraints.txt" not in setup


# Slicer 5.10's bundled packages --------------------------------------------------------------------------------

def slicer_constraints() -> dict[str, str]:
    pins = {}
    for line in SLICER_CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_slicer_constraints_hold_the_versions_the_study_found_conflicting():
    pins = slicer_constraints()
    assert pins["scipy"] == "1.13.1" and pins["pillow"] == "11.2.1" and pins["numpy"] == "2.0.2"


def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
    except OSError:
        return False
    return True


def slicer_python() -> str | None:
    """A Python 3.12 interpreter, Slicer 5.10's version (3.12.10), on PATH or among pyenv's."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [*map(str, sorted(pyenv.glob("versions/3.12*/bin/python3.12"))), shutil.which("python3.12")]
    # A pyenv shim is on PATH even when it has no 3.12 to run, so each candidate is tried.
    return next((path for path in found if path and runs_pip(path)), None)


def runs_pip(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-m", "pip", "--version"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("python", ["ci", "slicer"])
def test_first_use_install_changes_nothing_slicer_5_10_bundles(python):
    """pip's resolver on exactly the first-use requirements, Slicer's packages and the extension's torch pinned.

    Resolved for CI's Python and, where one is installed, for Python 3.12 as in Slicer 5.10 (markers and wheels
    differ between the two). With landmarker 0.4.1 in the requirements, as before, this fails: it needs scipy 1.15.
    """
    interpreter = sys.executable if python == "ci" else slicer_python()
    if interpreter is None:
        pytest.skip("no Python 3.12 interpreter here; the CI-Python case still resolves against Slicer's pins")
    if not pypi_reachable():
        pytest.skip("PyPI is unreachable; this resolution needs it")
    requirements = sorted({line for feature in FEATURES.values() for line in feature.requirements})
    command = [
        interpreter, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
        "--constraint", str(SLICER_CONSTRAINTS), *requirements, *EXTENSION_TORCH,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(result.stdout)["install"]}
    bundled = slicer_constraints()
    changed = {name: (bundled[name], version) for name, version in resolved.items()
               if name in bundled and version != bundled[name]}
    assert changed == {}
    assert Version(resolved["torch"]).public == "2.13.0" and resolved["torchvision"] == "0.28.0"
    # Slicer's VTK is not a pip distribution: a wheel of it would shadow Slicer's own.
    assert "vtk" not in resolved
