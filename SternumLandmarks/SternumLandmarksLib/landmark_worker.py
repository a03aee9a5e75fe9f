"""Landmark prediction in a worker process, on the background-run protocol the modules share.

Inside Slicer a Python thread advances only while some Python callback runs (PythonQt keeps the
GIL), so the prediction runs in a process of its own (:mod:`SternumSSMLib.background_run`):

- worker side (``python -m SternumLandmarksLib.landmark_worker --model FOLDER``): loads the model
  once, then answers each request ``{"labels": path, "ct": path or None}`` with a ``done`` message
  carrying the prediction (:func:`prediction_to_json`) and the model's ``confident_above``;
- client side (:class:`LandmarkWorker`): writes a case's label map and CT (the model checks with it
  that the labels show a sternum; a CT-channel model reads it too) to a temporary folder, sends
  them, decodes the prediction of each ``done`` message into a :class:`LandmarkPrediction` and
  deletes the folder when its request ends.

The client imports neither torch nor the network: only the worker process does.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from SternumSSMLib.background_run import LIB_PARENT as SSM_LIB_PARENT
from SternumSSMLib.background_run import BackgroundRun, Handler, serve
from SternumSSMLib.geometry import PointSet, Volume

from .landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkPrediction

LANDMARKS_LIB_PARENT = Path(__file__).resolve().parents[1]
CONFIG_FILE = "config.json"  # written by scn_model.save_model_folder next to the weights


def check_model_folder(model_folder: Path | str) -> None:
    """Refuse a folder that holds no landmark model before a worker starts (the worker checks it fully)."""
    if not (Path(model_folder) / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"Landmark model folder {model_folder} has no {CONFIG_FILE}; choose a folder written by "
            "`sternum-ssm train-landmarks`, or leave the model folder empty for the bundled model."
        )


# --------------------------------------------------------------------------- the prediction as JSON


def prediction_to_json(prediction: LandmarkPrediction) -> dict:
    """The prediction as JSON-safe values; positions in LPS, null for unplaced landmarks."""
    points = prediction.landmarks_lps
    return {
        "names": list(points.names),
        "positions_lps": [
            None if not defined else list(map(float, row))
            for row, defined in zip(points.positions, points.defined, strict=True)
        ],
        "confidence": [float(value) for value in prediction.confidence],
        "placed": [bool(value) for value in prediction.placed],
        "confident": [bool(value) for value in prediction.confident],
        "duplicates": [[first, second, float(distance)] for first, second, distance in prediction.duplicates],
        "record": prediction.record,
    }


def prediction_from_json(values: dict) -> LandmarkPrediction:
    """Inverse of :func:`prediction_to_json`."""
    positions = np.array([[np.nan] * 3 if row is None else row for row in values["positions_lps"]], dtype=float)
    return LandmarkPrediction(
        landmarks_lps=PointSet(tuple(values["names"]), positions, "LPS"),
        confidence=np.asarray(values["confidence"], dtype=float),
        placed=np.asarray(values["placed"], dtype=bool),
        confident=np.asarray(values["confident"], dtype=bool),
        duplicates=tuple((first, second, float(distance)) for first, second, distance in values["duplicates"]),
        record=dict(values["record"]),
    )


# --------------------------------------------------------------------------- client


class LandmarkWorker:
    """Client of one landmark worker process, which keeps ``model_folder``'s model loaded between cases.

    :meth:`predict` returns the request id; :meth:`poll` gives the protocol's messages, a ``done``
    one with ``prediction`` (a :class:`LandmarkPrediction`) and ``confident_above``.
    """

    def __init__(self, model_folder: Path | str = BUNDLED_LANDMARK_MODEL, device: str = "auto") -> None:
        check_model_folder(model_folder)
        self.model_folder = Path(model_folder)
        self.device = device
        self.run = BackgroundRun(
            "SternumLandmarksLib.landmark_worker",
            ["--model", self.model_folder, "--device", device],
            package_parents=(SSM_LIB_PARENT, LANDMARKS_LIB_PARENT),
        )
        self._inputs: dict[int, Path] = {}  # request id -> its temporary folder

    @property
    def alive(self) -> bool:
        """Whether the worker process runs, its model loaded or loading."""
        return self.run.running

    def predict(self, labels: Volume, ct: Volume) -> int:
        """Send one case, the label map and the CT it was made on (both LPS); returns the request id."""
        folder = Path(tempfile.mkdtemp(prefix="SternumLandmarks-"))
        try:
            request = {"labels": _write(labels, folder / "labels.nrrd"), "ct": _write(ct, folder / "ct.nrrd")}
            request_id = self.run.send(request)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._inputs[request_id] = folder
        return request_id

    def poll(self) -> list[dict]:
        """The worker's messages since the last call; never blocks."""
        messages = self.run.poll()
        for message in messages:
            if message["event"] == "done":
                message["prediction"] = prediction_from_json(message["prediction"])
            if message["event"] in ("done", "error", "cancelled"):
                self._remove_inputs(message.get("id"))
        return messages

    def cancel(self) -> None:
        """Kill the worker process tree; the running request ends as ``cancelled`` at the next poll."""
        self.run.cancel()

    def close(self) -> None:
        self.run.close()
        self._remove_inputs(None)

    def _remove_inputs(self, request_id: int | None) -> None:
        # id None: the worker died, so no request of it will end on its own.
        ids = list(self._inputs) if request_id is None else [request_id]
        for key in ids:
            folder = self._inputs.pop(key, None)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def _write(volume: Volume, path: Path) -> str:
    sitk.WriteImage(volume.to_sitk(), str(path), False)  # uncompressed: it is read once and deleted
    return str(path)


# --------------------------------------------------------------------------- worker


def load_handler(model_folder: str, device: str) -> tuple[Handler, dict]:
    """Load the model once; the handler predicts one request's case with it."""
    from .landmark_prediction import LandmarkModel

    model = LandmarkModel(model_folder, device=device)

    def handle(request: dict, progress) -> dict:
        labels = Volume.from_sitk(sitk.ReadImage(request["labels"]))
        ct = Volume.from_sitk(sitk.ReadImage(request["ct"]))
        prediction = model.predict(labels, ct, progress=progress)
        return {"prediction": prediction_to_json(prediction), "confident_above": float(model.config.confident_above)}

    return handle, {"model_folder": str(model.folder), "device": str(model.device)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="SternumLandmarks prediction worker (JSON lines on stdin/stdout)")
    parser.add_argument("--model", default=str(BUNDLED_LANDMARK_MODEL))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    return serve(lambda: load_handler(args.model, args.device))


if __name__ == "__main__":
    sys.exit(main())
