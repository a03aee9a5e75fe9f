"""First-use package check: asks once for what is missing, installs nothing when declined or present."""

from __future__ import annotations

from SternumSSMLib.dependencies import ensure_packages


class Recorder:
    def __init__(self, answer: bool = True) -> None:
        self.answer, self.questions, self.installed = answer, [], []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer

    def pip_install(self, requirement: str) -> None:
        self.installed.append(requirement)


def no_torch_install() -> bool:
    raise AssertionError("torch is installed here; the PyTorch extension must not be asked")


def test_present_packages_need_no_question():
    recorder = Recorder()
    assert ensure_packages({"json": "json", "numpy": "numpy"}, "Test", recorder.confirm, recorder.pip_install,
                           no_torch_install)
    assert recorder.questions == [] and recorder.installed == []


def test_missing_packages_are_named_in_one_question_and_installed():
    recorder = Recorder()
    requirements = {"json": "json", "no_such_module_a": "pkg-a==1.0", "no_such_module_b": "pkg-b==2.0"}
    assert ensure_packages(requirements, "Test module", recorder.confirm, recorder.pip_install, no_torch_install)
    assert recorder.questions == ["Test module needs pkg-a==1.0, pkg-b==2.0. Install now?"]
    assert recorder.installed == ["pkg-a==1.0", "pkg-b==2.0"]


def test_declining_installs_nothing():
    recorder = Recorder(answer=False)
    assert not ensure_packages({"no_such_module_a": "pkg-a"}, "Test", recorder.confirm, recorder.pip_install,
                               no_torch_install)
    assert recorder.installed == []
