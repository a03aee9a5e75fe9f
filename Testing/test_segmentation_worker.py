"""The worker process: model loaded once, progress messages, labels and uncertainty on disk, cancel kills the group."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from SternumSSMLib.geometry import Volume
from SternumSSMLib.phantom import random_parameters
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL
from SternumSSMLib.segmentation_worker import SegmentationWorker
from test_segmentation_inference import cropped_case

MODEL = Path(os.environ.get("STERNUM_SSM_TEST_MODEL", BUNDLED_MODEL))


def wait_for(worker: SegmentationWorker, event: str, timeout: float = 240.0) -> tuple[dict, list[dict]]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in worker.poll():
            seen.append(message)
            if message["event"] in (event, "error", "exit"):
                return message, seen
        time.sleep(0.05)
    raise TimeoutError(f"No {event!r} message within {timeout} s; saw {[m['event'] for m in seen]}")


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    image, truth = cropped_case(random_parameters(5102, hard_cases=False, spacing=(2.0, 2.0, 2.0)))
    path = tmp_path_factory.mktemp("worker") / "ct.nrrd"
    sitk.WriteImage(image.to_sitk(), str(path))
    return path, truth


def test_worker_serves_two_cases_with_one_model_load(ct_file, tmp_path):
    path, truth = ct_file
    worker = SegmentationWorker(MODEL)
    try:
        first = worker.submit(path, tmp_path / "a.nrrd")
        done, seen = wait_for(worker, "done")
        assert done["event"] == "done" and done["id"] == first, done
        assert done["uncertainty"] is None  # computed only when asked for
        progress = [m for m in seen if m["event"] == "progress"]
        assert progress and progress[-1]["done"] == progress[-1]["total"]
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nrrd")))
        overlap = np.mean((labels > 0) == (truth.array > 0))
        assert overlap > 0.97
        worker.submit(path, tmp_path / "b.nrrd")
        done, seen = wait_for(worker, "done")
        assert done["event"] == "done"
        assert [m for m in seen if m["event"] == "ready"] == []  # the model stayed loaded
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b.nrrd"))), labels)
    finally:
        worker.close()


def test_uncertainty_comes_back_on_the_ct_grid_and_peaks_on_label_boundaries(tmp_path):
    image, _ = cropped_case(random_parameters(5103, hard_cases=False, spacing=(3.0, 3.0, 3.0)))
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image.to_sitk(), str(path))
    worker = SegmentationWorker(MODEL)
    try:
        worker.submit(path, tmp_path / "labels.nrrd", uncertainty_path=tmp_path / "uncertainty.nrrd")
        done, _ = wait_for(worker, "done")
    finally:
        worker.close()
    assert done["event"] == "done" and done["uncertainty"] == str(tmp_path / "uncertainty.nrrd"), done
    uncertainty = Volume.from_sitk(sitk.ReadImage(done["uncertainty"]))
    assert uncertainty.geometry.same_grid(image.geometry)
    assert uncertainty.array.min() >= 0.0 and uncertainty.array.max() <= 1.0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(done["output"]))
    boundary = ndimage.maximum_filter(labels, size=3) != ndimage.minimum_filter(labels, size=3)
    deep_in_body = ndimage.binary_erosion(labels == 2, iterations=1)
    assert deep_in_body.sum() > 20
    on_boundary, inside = uncertainty.array[boundary].mean(), uncertainty.array[deep_in_body].mean()
    # The demo model is never quite sure (about 0.07 inside the body at 3 mm); boundaries reach about twice that.
    assert on_boundary > 1.5 * inside, (on_boundary, inside)


def test_cancel_kills_the_process_group_and_a_new_request_restarts(ct_file, tmp_path):
    path, _ = ct_file
    worker = SegmentationWorker(MODEL)
    try:
        worker.submit(path, tmp_path / "c.nrrd")
        wait_for(worker, "progress")
        group = worker.process.pid
        worker.cancel()
        assert not worker.running
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
        assert not (tmp_path / "c.nrrd").exists()
        worker.submit(path, tmp_path / "d.nrrd")
        done, _ = wait_for(worker, "done")
        assert done["event"] == "done" and (tmp_path / "d.nrrd").exists()
    finally:
        worker.close()


def test_errors_come_back_as_messages(tmp_path):
    worker = SegmentationWorker(MODEL)
    try:
        worker.submit(tmp_path / "missing.nrrd", tmp_path / "out.nrrd")
        message, _ = wait_for(worker, "done")
        assert message["event"] == "error" and "missing.nrrd" in message["message"]
    finally:
        worker.close()
    broken = SegmentationWorker(tmp_path / "no-model")
    broken.submit(tmp_path / "x.nrrd", tmp_path / "y.nrrd")
    message, _ = wait_for(broken, "exit", timeout=120)
    assert message["event"] == "exit" and message["returncode"] != 0
    assert any("does not exist" in line for line in message["stderr"])
