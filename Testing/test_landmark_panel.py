"""The SternumLandmarks panel's workflow (LandmarkPanel) on the real MRML scene, without a widget: what is
enabled and why, what a run captures, where a late result goes, the live QA across exit and enter.

The parameters are the module's own ``SternumLandmarksParameterNode`` on a real scripted module node
(through the harness's parameterNodeWrapper); the worker is the real one with the bundled SCN.
"""

from __future__ import annotations

import json
import time

import pytest
from slicer_harness import LANDMARKS_MODULE_FILE
from SternumLandmarksLib.landmark_panel import LandmarkPanel
from SternumLandmarksLib.landmark_session import landmarks_node_for
from SternumSSMLib.anatomy import DEFAULT_PROTOCOL_FILE
from SternumSSMLib.markups import set_landmark_positions
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.prediction_nodes import show_prediction
from SternumSSMLib.segmentation_nodes import segmentation_from_labelmap
from SternumSSMLib.volume_nodes import volume_node_from_volume


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(2.0, 2.0, 2.0)))


@pytest.fixture
def parameters(harness):
    return harness.load(LANDMARKS_MODULE_FILE).SternumLandmarksLogic().getParameterNode()


@pytest.fixture
def panel(harness):
    states, errors = [], []
    panel = LandmarkPanel(harness.scene, on_state=states.append, on_error=errors.append)
    panel.states, panel.errors = states, errors
    yield panel
    panel.cleanup()


def poll_until_idle(panel: LandmarkPanel, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while panel.poll():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)


def test_place_is_enabled_only_when_it_can_run_and_says_why_not(harness, panel, parameters, phantom, tmp_path):
    panel.enter(parameters)
    assert parameters.inputSegmentation is None
    assert panel.states[-1].place_blocker == "Choose the sternum segmentation." and not panel.states[-1].place_enabled

    by_hand = segmentation_from_labelmap(harness.scene, phantom.labels, name="by hand")
    parameters.inputSegmentation = by_hand
    panel.parameters_changed()
    assert panel.states[-1].place_blocker.startswith("Choose the CT that segmentation 'by hand' was made on")
    with pytest.raises(ValueError, match="Choose the CT"):
        panel.start_placement()

    parameters.referenceVolume = volume_node_from_volume(harness.scene, phantom.image, "CT")
    panel.parameters_changed()
    assert panel.states[-1].place_enabled and panel.states[-1].place_blocker == ""

    parameters.modelFolder = tmp_path
    panel.parameters_changed()
    assert "has no config.json" in panel.states[-1].place_blocker
    assert panel.worker is None  # nothing was started


def test_a_run_keeps_its_inputs_and_a_removed_target_gets_nothing(harness, panel, parameters, phantom):
    ct = volume_node_from_volume(harness.scene, phantom.image, "CT")
    segmentation = show_prediction(harness.scene, phantom.labels, ct, record={})
    panel.enter(parameters)
    assert parameters.inputSegmentation is segmentation  # the newest SternumSSM segmentation
    run = panel.start_placement()
    assert (run.segmentation, run.reference_volume) == (segmentation, ct)
    assert panel.states[-1].cancel_enabled and not panel.states[-1].place_enabled

    harness.scene.RemoveNode(segmentation)  # the user deletes it while the model runs
    poll_until_idle(panel)
    assert panel.states[-1].status.startswith("Segmentation 'CT sternum' was removed during the run")
    assert harness.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode") == 0
    assert panel.errors == [] and panel.states[-1].place_blocker == "Choose the sternum segmentation."


def test_a_result_that_cannot_be_shown_ends_the_run_and_says_why(harness, panel, parameters, phantom, tmp_path):
    # A protocol of three landmarks, with the bundled 34-landmark model.
    protocol = json.loads(DEFAULT_PROTOCOL_FILE.read_text())
    protocol["landmarks"] = protocol["landmarks"][:3]
    (tmp_path / "three.json").write_text(json.dumps(protocol))
    ct = volume_node_from_volume(harness.scene, phantom.image, "CT")
    show_prediction(harness.scene, phantom.labels, ct, record={})
    panel.enter(parameters)
    parameters.protocolFile = tmp_path / "three.json"
    panel.parameters_changed()
    panel.start_placement()
    poll_until_idle(panel)
    assert panel.errors == [
        "Cannot show the landmarks: The landmark model predicts 34 landmarks that do not match the protocol's 3; "
        "choose the model trained for this protocol."
    ]
    assert panel.states[-1].place_enabled and not panel.states[-1].cancel_enabled


def test_live_qa_stops_on_exit_and_follows_again_on_enter(harness, panel, parameters, phantom):
    ct = volume_node_from_volume(harness.scene, phantom.image, "CT")
    segmentation = show_prediction(harness.scene, phantom.labels, ct, record={})
    panel.enter(parameters)
    landmarks = panel.create_empty_landmarks()
    panel.parameters_changed()  # the widget forwards the parameter node's ModifiedEvent
    set_landmark_positions(landmarks, phantom.landmarks)
    assert [row.state for row in panel.states[-1].rows].count("ok") >= 30
    assert landmarks_node_for(segmentation) is None  # made by hand, not a prediction of it

    panel.exit()
    count = len(panel.states)
    x, y, z = landmarks.GetNthControlPointPositionWorld(9)
    landmarks.SetNthControlPointPositionWorld(9, x, y + 15.0, z)
    assert len(panel.states) == count  # nobody is looking: no QA work while another module is shown

    panel.enter(parameters)
    assert panel.states[-1].rows[9].state.startswith("surface")
    assert panel.jump_to_landmark(9)
