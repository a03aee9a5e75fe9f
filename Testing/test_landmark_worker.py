"""Landmark prediction in a worker process: the real bundled SCN in a real subprocess, on the
background-run protocol both modules share (progress, done, error, cancelled; one cancel)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkPrediction, find_duplicates
from SternumLandmarksLib.landmark_worker import (
    LandmarkWorker,
    prediction_from_json,
    prediction_to_json,
)
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.geometry import PointSet
from SternumSSMLib.phantom import PhantomParameters, generate_phantom

ENDS = ("done", "error", "cancelled")


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(2.0, 2.0, 2.0)))


@pytest.fixture(scope="module")
def worker():
    """One worker for the module's tests: the model loads once."""
    client = LandmarkWorker(BUNDLED_LANDMARK_MODEL, device="cpu")
    yield client
    client.cancel()
    client.close()


def messages_until_end(client: LandmarkWorker, timeout_s: float = 60.0) -> list[dict]:
    received = []
    deadline = time.monotonic() + timeout_s
    while not any(message["event"] in ENDS for message in received):
        assert time.monotonic() < deadline, f"no end message within {timeout_s} s: {received}"
        received += client.poll()
        time.sleep(0.02)
    return received


def test_prediction_survives_the_trip_through_json():
    names = default_protocol().ids
    positions = np.arange(34 * 3, dtype=float).reshape(34, 3)
    positions[7] = np.nan
    confidence = np.linspace(0.0, 1.0, 34)
    prediction = LandmarkPrediction(
        landmarks_lps=PointSet(names, positions, "LPS"),
        confidence=confidence,
        placed=confidence >= 0.05,
        confident=confidence >= 0.5,
        duplicates=tuple(find_duplicates(positions, names, 2.0)),
        record={"seconds": 1.5, "grid_shape_kji": [128, 32, 48]},
    )
    back = prediction_from_json(prediction_to_json(prediction))
    assert back.landmarks_lps.names == names and back.landmarks_lps.coordinate_system == "LPS"
    np.testing.assert_array_equal(back.landmarks_lps.positions, positions)  # NaN rows included
    np.testing.assert_array_equal(back.confidence, confidence)
    np.testing.assert_array_equal(back.placed, prediction.placed)
    np.testing.assert_array_equal(back.confident, prediction.confident)
    assert back.duplicates == prediction.duplicates and back.record == prediction.record


def test_worker_places_the_landmarks_and_keeps_its_model_loaded(worker, phantom):
    request_id = worker.predict(phantom.labels, phantom.image)
    [inputs] = worker._inputs.values()
    assert (inputs / "labels.nrrd").is_file() and (inputs / "ct.nrrd").is_file()
    messages = messages_until_end(worker)
    assert messages[0]["event"] == "ready" and messages[0]["device"] == "cpu"
    progress = [m for m in messages if m["event"] == "progress"]
    assert progress and all(m["id"] == request_id and 0.0 <= m["fraction"] <= 1.0 for m in progress)
    done = messages[-1]
    assert done["event"] == "done" and done["id"] == request_id
    prediction = done["prediction"]
    assert isinstance(prediction, LandmarkPrediction) and prediction.landmarks_lps.names == default_protocol().ids
    assert int(prediction.placed.sum()) == 34
    assert done["confident_above"] == pytest.approx(0.2)
    # Near the phantom's own landmarks (the bundled model's held-out median is about 2 mm).
    errors = np.linalg.norm(prediction.landmarks_lps.positions - phantom.landmarks.positions, axis=1)
    assert np.median(errors) < 6.0
    assert not inputs.exists()  # the temporary case files go when the request ends

    # A second case: the same process, no second model load.
    started = time.monotonic()
    worker.predict(phantom.labels, phantom.image)
    second = messages_until_end(worker)
    assert [m["event"] for m in second if m["event"] in ("ready", "done")] == ["done"]
    assert time.monotonic() - started < 15.0


def test_cancel_kills_the_worker_and_the_next_case_starts_a_fresh_one(worker, phantom):
    worker.predict(phantom.labels, phantom.image)
    [inputs] = worker._inputs.values()
    process = worker.run.process
    worker.cancel()
    assert process.poll() is not None  # killed, not left running
    assert [m["event"] for m in worker.poll()] == ["cancelled"]
    assert not inputs.exists() and not worker.alive

    worker.predict(phantom.labels, phantom.image)
    assert messages_until_end(worker)[-1]["event"] == "done"


def test_a_folder_without_a_model_is_refused_before_any_process_starts(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"has no config\.json; choose a folder written by"):
        LandmarkWorker(tmp_path)
