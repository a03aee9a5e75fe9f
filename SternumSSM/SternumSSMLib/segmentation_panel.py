"""The SternumSSM panel's workflow, without Qt: what can run and why, the run in progress with the inputs it
captured, where its result goes, and what a result arriving after the user left the module does.

The module's Widget forwards Qt signals to :class:`SegmentationPanel` and draws :meth:`SegmentationPanel.state`;
nothing here imports Qt, torch or nnU-Net, so the panel works before the first-use install and under pytest
on a real MRML scene.

A run:

1. :meth:`SegmentationPanel.start` takes :class:`RunInputs` captured from the parameter node at that moment
   (CT node, model, preset, device, ROI, re-run mode, uncertainty) and writes the CT into a run folder of its own
   under Slicer's temporary folder;
2. :meth:`SegmentationPanel.poll` (from a QTimer) follows the worker's messages
   (:mod:`SternumSSMLib.background_run`); on ``done`` the result goes to the *captured* CT, whatever the panel
   shows by then, and appears in 3D in the review layout with the views centred on the sternum;
3. however the run ends (done, error, cancelled), its run folder is deleted: Slicer never cleans its
   temporary folder.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import slicer

from .background_run import BackgroundRun
from .case_files import write_volume
from .prediction_nodes import (
    prediction_for,
    set_uncertainty_visible,
    show_prediction,
    show_uncertainty,
    uncertainty_node,
)
from .roi import Box
from .scene_contract import SOURCE_VOLUME_REFERENCE
from .segmentation_inference import BUNDLED_MODEL
from .segmentation_worker import SegmentationWorker
from .views import centre_views, set_review_layout, show_in_slice_views, show_segments_in_3d, structure_centre_ras
from .volume_nodes import volume_from_node

# The module self-test's case: a phantom cut to the middle 210 mm of the chest (LPS mm), so through the costal
# cartilages: the bundled model segments it in a few tiles, and QA flags the cut cartilage.
SELF_TEST_SEED = 5105
SELF_TEST_BOX = Box(np.array([-105.0, -1000.0, -1000.0]), np.array([105.0, 1000.0, 1000.0]))


def export_readiness(parameters) -> tuple[bool, str]:
    """Whether Export can run with these parameters, and what it would write (or what is missing)."""
    from .export import describe_export

    has_folder = str(parameters.datasetFolder or "") not in ("", ".")
    if not (has_folder and parameters.inputVolume and parameters.exportSegmentation and parameters.caseId):
        return False, "Choose the CT, the corrected segmentation, a dataset folder and a case id."
    return True, describe_export(parameters.datasetFolder, parameters.caseId, parameters.exportSplit)


def chosen_model_folder(path: Path | str | None) -> Path:
    """The model folder the user chose; the bundled demo model when the field is empty."""
    return BUNDLED_MODEL if str(path or "") in ("", ".") else Path(path)


def present_prediction(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLSegmentationNode) -> None:
    """Show a prediction for review: over its CT, in 3D, in the layout with the 3D and slice views, centred on
    the sternum."""
    volume_node = node.GetNodeReference(SOURCE_VOLUME_REFERENCE)
    if volume_node is not None:
        show_in_slice_views(scene, volume_node)
    show_segments_in_3d(node)
    set_review_layout(scene)
    centre = structure_centre_ras(node)
    if centre is not None:
        centre_views(scene, centre)


@dataclass(frozen=True)
class RunInputs:
    """Everything one segmentation run uses, fixed when it starts; later changes in the panel change nothing."""

    volume_node: slicer.vtkMRMLScalarVolumeNode
    model_folder: Path
    preset: str = "fast"
    device: str = "auto"
    roi_lps: tuple[float, ...] | None = None  # (lo x, y, z, hi x, y, z), LPS millimetres
    auto_roi: bool = True  # without roi_lps: the model's localiser finds the box first (when it has one)
    rerun_mode: str = "update"
    with_uncertainty: bool = False

    @classmethod
    def capture(cls, parameters) -> RunInputs:
        """From the module's parameter node (the fields of ``SternumSSMParameterNode``)."""
        if not parameters.inputVolume:
            raise ValueError("Choose the CT volume to segment.")
        roi = None
        if parameters.roi:
            bounds = [0.0] * 6
            parameters.roi.GetRASBounds(bounds)
            box = Box.from_ras_bounds(bounds)
            roi = (*box.lo_lps.tolist(), *box.hi_lps.tolist())
        return cls(
            volume_node=parameters.inputVolume,
            model_folder=chosen_model_folder(parameters.modelFolder),
            preset=parameters.preset,
            device=parameters.device,
            roi_lps=roi,
            auto_roi=parameters.findSternumFirst,
            rerun_mode=parameters.rerunMode,
            with_uncertainty=parameters.showUncertainty,
        )


@dataclass
class PanelState:
    """What the panel shows: which buttons work, and the sentences that say why."""

    can_segment: bool
    can_cancel: bool
    status: str
    progress: int  # percent
    has_result: bool  # the last result is in the scene, to correct or to focus on
    flags: list[dict] = field(default_factory=list)  # QA flags of the last result (code, severity, message, segment)


@dataclass(frozen=True)
class RunEnd:
    """How a run ended; ``segmentation_node`` is the result of a ``done`` run."""

    kind: Literal["done", "error", "cancelled"]
    message: str
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None


@dataclass
class _Run:
    inputs: RunInputs
    folder: Path
    request_id: int


class SegmentationPanel:
    """One segmentation at a time, in a worker process that keeps its model loaded between runs."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        temporary_root: Path | str,
        start_worker=SegmentationWorker,
    ) -> None:
        """``start_worker(model_folder, preset, device)`` returns a :class:`BackgroundRun` client."""
        self.scene = scene
        self.temporary_root = Path(temporary_root)
        self.start_worker = start_worker
        self.worker: BackgroundRun | None = None
        self._worker_key: tuple | None = None
        self.run: _Run | None = None
        self.progress = 0
        self.status = ""
        self.flags: list[dict] = []
        self._result_node: slicer.vtkMRMLSegmentationNode | None = None

    @property
    def running(self) -> bool:
        return self.run is not None

    @property
    def result_node(self) -> slicer.vtkMRMLSegmentationNode | None:
        """The last run's segmentation, while it is still in the scene."""
        node = self._result_node
        return node if node is not None and self.scene.IsNodePresent(node) else None

    def readiness(self, parameters) -> tuple[bool, str]:
        """Whether Segment can start with these parameters, and the sentence that says why (not)."""
        if self.running:
            return False, f"Segmenting {self.run.inputs.volume_node.GetName()}..."
        if not parameters.inputVolume:
            return False, "Choose the CT volume to segment."
        folder = chosen_model_folder(parameters.modelFolder)
        if not (folder / "dataset.json").is_file():
            return False, (
                f"{folder} is not an nnU-Net model folder (it has no dataset.json): choose the trained model's "
                "folder, or clear the field to use the bundled model."
            )
        return True, f"Ready to segment {parameters.inputVolume.GetName()}."

    def state(self, parameters) -> PanelState:
        can_segment, reason = self.readiness(parameters)
        # While running: the worker's progress; after a run: how it ended, until the inputs stop being valid.
        status = self.status if self.running or (can_segment and self.status) else reason
        flags = list(self.flags) if self.result_node is not None else []
        return PanelState(can_segment, self.running, status, self.progress, self.result_node is not None, flags)

    def start(self, inputs: RunInputs) -> None:
        """Write the captured CT to this run's folder and hand it to the worker."""
        if self.running:
            raise RuntimeError("A segmentation is already running; cancel it first.")
        key = (inputs.model_folder, inputs.preset, inputs.device)
        if self.worker is not None and key != self._worker_key:
            self.worker.close()  # idle: the model, preset or device changed
            self.worker = None
        folder = Path(tempfile.mkdtemp(prefix="SternumSSM-run-", dir=self.temporary_root))
        try:
            write_volume(volume_from_node(inputs.volume_node), folder / "ct.nrrd")
            if self.worker is None:
                self.worker, self._worker_key = self.start_worker(*key), key
            request_id = self.worker.submit(
                folder / "ct.nrrd",
                folder / "labels.nrrd",
                list(inputs.roi_lps) if inputs.roi_lps else None,
                folder / "uncertainty.nrrd" if inputs.with_uncertainty else None,
                auto_roi=inputs.auto_roi,
            )
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.run = _Run(inputs, folder, request_id)
        self.progress, self.status, self.flags = 0, "Loading the model and segmenting...", []

    def poll(self) -> list[RunEnd]:
        """Follow the worker; returns how the run ended, if it did since the last call. Never blocks."""
        if self.worker is None:
            return []
        ends = []
        for message in self.worker.poll():
            if self.run is None or message.get("id") not in (self.run.request_id, None):
                continue  # a message of an earlier, cancelled request
            event = message["event"]
            if event == "progress":
                self.progress, self.status = round(100 * message["fraction"]), message["text"]
            elif event == "done":
                ends.append(self._finish(message))
            elif event in ("error", "cancelled"):
                text = message.get("message", "Cancelled.")
                ends.append(self._end(RunEnd(event, text)))
        return ends

    def cancel(self) -> list[RunEnd]:
        """Stop the running segmentation (the worker and its model go; the next run starts a fresh one).
        Without a run nothing happens: an idle worker keeps its model loaded."""
        if not self.running:
            return []
        self.worker.cancel()
        return self.poll()

    def shutdown(self) -> None:
        """Module cleanup: cancel a run, end the idle worker."""
        self.cancel()
        if self.worker is not None:
            self.worker.close()
        self.worker = None

    def _finish(self, message: dict) -> RunEnd:
        """The result of the captured CT: shown on that CT whatever the panel selects now."""
        import SimpleITK as sitk

        from .geometry import Volume

        inputs = self.run.inputs
        try:
            if not self.scene.IsNodePresent(inputs.volume_node):
                raise ValueError(f"The CT {inputs.volume_node.GetName()!r} was removed while it was segmented.")
            labels = Volume.from_sitk(sitk.ReadImage(message["output"]))
            record = message["record"] | {"qa_flags": message["flags"]}
            existing = prediction_for(self.scene, inputs.volume_node)
            node = show_prediction(self.scene, labels, inputs.volume_node, record, existing, mode=inputs.rerun_mode)
            if message.get("uncertainty"):
                uncertainty = Volume.from_sitk(sitk.ReadImage(message["uncertainty"]))
                show_uncertainty(self.scene, uncertainty, inputs.volume_node)
                set_uncertainty_visible(self.scene, inputs.volume_node, True)
            elif uncertainty_node(inputs.volume_node) is not None:
                self.scene.RemoveNode(uncertainty_node(inputs.volume_node))  # it belonged to an earlier prediction
            present_prediction(self.scene, node)
        except Exception as error:  # a bad result file or a removed CT ends the run like a worker error
            return self._end(RunEnd("error", f"Cannot show the segmentation: {error}"))
        self.flags, self._result_node = message["flags"], node
        seconds = message["record"].get("total_seconds", 0.0)
        return self._end(RunEnd("done", f"Done in {seconds:.0f} s.", node))

    def _end(self, end: RunEnd) -> RunEnd:
        shutil.rmtree(self.run.folder, ignore_errors=True)
        self.run = None
        self.status = end.message if end.kind != "error" else "Segmentation failed."
        self.progress = 100 if end.kind == "done" else 0
        return end

    def focus_flag(self, index: int) -> bool:
        """Centre the views on the structure the ``index``-th QA flag names (the sternum for a flag on the whole
        result); False when the result or the structure is gone."""
        node = self.result_node
        if node is None or not 0 <= index < len(self.flags):
            return False
        segment = self.flags[index].get("segment")
        centre = structure_centre_ras(node, [segment]) if segment else None
        if centre is None:
            centre = structure_centre_ras(node)
        if centre is None:
            return False
        centre_views(self.scene, centre)
        return True
