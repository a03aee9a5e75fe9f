"""The landmark step of ``sternum-ssm batch``: the SCN model, loaded once per worker by the core's batch engine.

The core (``SternumSSMLib.batch_case``) never imports this package; ``SternumSSMLib.cli`` hands
this step to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from SternumSSMLib.batch_case import PlacedLandmarks
from SternumSSMLib.geometry import Volume
from SternumSSMLib.provenance import folder_sha256

from .landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel


@dataclass(frozen=True)
class SCNLandmarkStep:
    """A landmark model folder and device; ``model_id`` is the hash of the folder's files."""

    model_folder: str
    device: str
    model_id: str

    def load(self) -> LandmarkModel:
        return LandmarkModel(self.model_folder, device=self.device)

    def place(self, model: LandmarkModel, labels: Volume, ct: Volume) -> PlacedLandmarks:
        prediction = model.predict(labels, ct if model.reads_ct else None)
        # The record's folder path says where the model lay on one machine; the hash identifies it.
        record = {key: value for key, value in prediction.record.items() if key != "model_folder"}
        return PlacedLandmarks(prediction.points("LPS"), prediction.confidence, prediction.flags(), record)


def scn_landmark_step(model_folder: Path | str | None = None, device: str = "auto") -> SCNLandmarkStep:
    """The step for a model folder (default: the bundled demo model), hashed once where the batch is planned."""
    folder = Path(model_folder) if model_folder else BUNDLED_LANDMARK_MODEL
    if not folder.is_dir():
        raise FileNotFoundError(f"Landmark model folder {folder} does not exist.")
    return SCNLandmarkStep(str(folder.absolute()), device, folder_sha256(folder))
