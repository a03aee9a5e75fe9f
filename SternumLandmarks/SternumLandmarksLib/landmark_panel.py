"""The SternumLandmarks panel's workflow, without Qt: what is enabled and why, the run in progress
and the inputs it captured, where its result goes, the live QA and the exports.

The module's widget only forwards Qt signals here and draws :class:`PanelState`; the self-test and
the pytest suite drive the same class on a real MRML scene. Parameters are read from a
``SternumLandmarksParameterNode`` (the names below are its fields); the panel keeps it across
:meth:`LandmarkPanel.exit`, as Slicer's module template keeps its parameter node, so a run that ends
after the user left the module still finds its inputs.

A run captures everything when it starts (:class:`CapturedRun`): the segmentation, its CT, the
model folder, the protocol and the label map sent to the worker. Its result goes to that
segmentation's landmarks node, whatever is selected when it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import slicer
from SternumSSMLib.anatomy import LandmarkProtocol, load_protocol
from SternumSSMLib.geometry import Volume
from SternumSSMLib.markups import create_landmarks_node
from SternumSSMLib.mrml import module_logic

from .landmark_nodes import moved_landmarks, show_in_views
from .landmark_observer import LandmarkQAObserver
from .landmark_prediction import BUNDLED_LANDMARK_MODEL
from .landmark_qa import LandmarkQAContext, LandmarkQAReport
from .landmark_session import (
    SNAP_SEGMENTS,
    LandmarkRow,
    default_input_segmentation,
    export_landmarks,
    landmark_export_paths,
    landmark_file_stem,
    landmark_inputs,
    landmark_labels,
    landmark_table,
    landmarks_node_for,
    pseudo_landmarks_node,
    reference_volume,
    show_landmarks_for_segmentation,
    update_pseudo_landmarks,
)
from .landmark_worker import LandmarkWorker, check_model_folder


class LandmarkParameters(Protocol):
    """The fields of ``SternumLandmarksParameterNode`` the panel reads and writes."""

    inputSegmentation: Any  # vtkMRMLSegmentationNode or None
    referenceVolume: Any  # vtkMRMLScalarVolumeNode or None
    modelFolder: Path
    protocolFile: Path
    landmarks: Any  # vtkMRMLMarkupsFiducialNode or None
    snapToSurface: bool
    snapSegment: str
    pseudoPerSegment: int
    datasetFolder: Path
    caseId: str
    annotator: str
    landmarksFolder: Path
    csvCoordinateSystem: str


@dataclass(frozen=True)
class CapturedRun:
    """The inputs of one landmark run, read when it started; the result goes to ``segmentation``."""

    request_id: int
    segmentation: slicer.vtkMRMLSegmentationNode
    reference_volume: slicer.vtkMRMLScalarVolumeNode
    model_folder: Path
    protocol: LandmarkProtocol
    labels: Volume  # what the model read (LPS); the live QA of the result reads it too


@dataclass(frozen=True)
class PanelState:
    """What the widget shows. ``place_blocker`` says why Place landmarks is disabled ("" when enabled)."""

    place_enabled: bool = False
    place_blocker: str = ""
    cancel_enabled: bool = False  # while a run is in progress
    progress_percent: int = 0
    status: str = ""
    rows: tuple[LandmarkRow, ...] = ()
    qa_summary: str = ""
    export_enabled: bool = False
    export_landmarks_enabled: bool = False
    export_plan: str = ""


def chosen_path(path: Path | str | None) -> Path | None:
    """The path the user chose, or None for the empty path an untouched path field gives."""
    return None if path is None or str(path) in ("", ".") else Path(path)


@dataclass
class _QA:
    """The live QA in place: which inputs it checks, its observer, its last rows and summary."""

    key: tuple | None = None
    observer: LandmarkQAObserver | None = None
    rows: tuple[LandmarkRow, ...] = ()
    summary: str = ""


class LandmarkPanel:
    """Workflow of the SternumLandmarks panel on ``scene``.

    ``on_state(state)`` is called whenever what the panel shows changes; ``on_error(message)`` when
    a run fails (the widget shows a dialog). ``worker_factory(model_folder)`` makes the worker
    client; one worker is kept while the model folder stays the same, so its model loads once.
    """

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        on_state: Callable[[PanelState], None] = lambda state: None,
        on_error: Callable[[str], None] = lambda message: None,
        worker_factory: Callable[[Path], LandmarkWorker] = LandmarkWorker,
    ) -> None:
        self.scene = scene
        self.on_state = on_state
        self.on_error = on_error
        self.worker_factory = worker_factory
        self.parameters: LandmarkParameters | None = None
        self.active = False  # the module is shown: the live QA runs and follows parameter changes
        self.run: CapturedRun | None = None
        self.worker: LandmarkWorker | None = None
        self._qa = _QA()
        self._progress = 0
        self._status = ""
        # Worked out when the parameters change, not on every QA report while a point is dragged.
        self._blocker = ""
        self._export_plan = ""

    # ------------------------------------------------------------------ module life cycle

    def enter(self, parameters: LandmarkParameters) -> None:
        """The module is shown with ``parameters``: choose the default segmentation, start the live QA."""
        self.parameters = parameters
        self.active = True
        if not parameters.inputSegmentation:
            parameters.inputSegmentation = default_input_segmentation(self.scene)  # calls parameters_changed
        self.parameters_changed()

    def exit(self) -> None:
        """The user left the module: stop the live QA; the parameters and a run in progress stay."""
        self.active = False
        self._stop_qa()

    def scene_closing(self) -> None:
        """The scene is about to close: its nodes, the parameter node among them, are going."""
        self.cancel()
        self._stop_qa()
        self.parameters = None

    def cleanup(self) -> None:
        """The module is being unloaded (or reloaded): stop the worker and the live QA."""
        self._stop_qa()
        if self.worker is not None:
            self.worker.cancel()
            self.worker.close()
        self.worker, self.run = None, None

    def parameters_changed(self) -> None:
        """A parameter changed: follow it with the live QA and say what can run now."""
        if self.parameters is None:
            return
        if self.active:
            self._refresh_qa()
        self._blocker = self.place_blocker()
        self._export_plan = self._plan_export()
        self._notify()

    # ------------------------------------------------------------------ state

    def state(self) -> PanelState:
        parameters = self.parameters
        if parameters is None:
            return PanelState(place_blocker="No parameter node.", status=self._status)
        return PanelState(
            place_enabled=not self._blocker,
            place_blocker=self._blocker,
            cancel_enabled=self.run is not None,
            progress_percent=self._progress,
            status=self._status,
            rows=self._qa.rows,
            qa_summary=self._qa.summary,
            export_enabled=self._dataset_export_ready(),
            export_landmarks_enabled=bool(parameters.landmarks and chosen_path(parameters.landmarksFolder)),
            export_plan=self._export_plan,
        )

    def place_blocker(self) -> str:
        """Why Place landmarks cannot start now, as a sentence the user can act on; "" when it can."""
        parameters = self.parameters
        if self.run is not None:
            return "Landmarks are being placed; wait, or cancel."
        try:
            reference_volume(parameters.inputSegmentation, parameters.referenceVolume)
            check_model_folder(self.model_folder())
        except (ValueError, OSError) as error:
            return str(error)
        return ""

    def model_folder(self) -> Path:
        return chosen_path(self.parameters.modelFolder) or BUNDLED_LANDMARK_MODEL

    def protocol(self) -> LandmarkProtocol:
        return load_protocol(chosen_path(self.parameters.protocolFile))

    def _notify(self) -> None:
        self.on_state(self.state())

    def _dataset_export_ready(self) -> bool:
        parameters = self.parameters
        return bool(parameters.inputSegmentation and parameters.caseId and chosen_path(parameters.datasetFolder))

    def _plan_export(self) -> str:
        from SternumSSMLib.export import describe_export

        if not self._dataset_export_ready():
            return "Choose the segmentation, a dataset folder and a case id."
        return describe_export(self.parameters.datasetFolder, self.parameters.caseId)

    # ------------------------------------------------------------------ placing landmarks

    def moved_landmarks(self) -> list[str]:
        """Ids of the points a new run would replace after the user moved them (ask first)."""
        segmentation = self.parameters.inputSegmentation
        existing = None if segmentation is None else landmarks_node_for(segmentation)
        return [] if existing is None else moved_landmarks(existing)

    def start_placement(self) -> CapturedRun:
        """Capture the inputs and send them to the worker process; :meth:`poll` takes it from there."""
        blocker = self.place_blocker()
        if blocker:
            raise ValueError(blocker)
        parameters = self.parameters
        segmentation = parameters.inputSegmentation
        reference = reference_volume(segmentation, parameters.referenceVolume)
        protocol = self.protocol()
        labels, ct = landmark_inputs(segmentation, reference)
        worker = self._worker_for(self.model_folder())
        loading = not worker.alive
        request_id = worker.predict(labels, ct)
        self.run = CapturedRun(request_id, segmentation, reference, worker.model_folder, protocol, labels)
        self._progress = 0
        self._status = "Loading the landmark model..." if loading else "Placing landmarks..."
        self._blocker = self.place_blocker()
        self._notify()
        return self.run

    def _worker_for(self, model_folder: Path) -> LandmarkWorker:
        if self.worker is not None and self.worker.model_folder != model_folder:
            self.worker.close()
            self.worker = None
        if self.worker is None:
            self.worker = self.worker_factory(model_folder)
        return self.worker

    def poll(self) -> bool:
        """Apply what the worker sent since the last call; True while a run is in progress."""
        if self.worker is None:
            return False
        for message in self.worker.poll():
            if self.run is None or message.get("id") not in (None, self.run.request_id):
                continue  # a request this panel no longer waits for
            event = message["event"]
            if event == "ready":
                self._status = "Placing landmarks..."
            elif event == "progress":
                self._progress, self._status = round(100 * message["fraction"]), message["text"]
            elif event == "done":
                self._finish_with_result(message)
            elif event == "cancelled":
                self._finish("Cancelled.")
            elif event == "error":
                self._finish("Landmark placement failed.")
                self.on_error(f"Landmark placement failed: {message['message']}")
            self._notify()
        return self.run is not None

    def cancel(self) -> None:
        """Stop the run in progress (the worker process and its children are killed)."""
        if self.run is not None and self.worker is not None:
            self._status = "Cancelling..."
            self.worker.cancel()
            self._notify()

    def _finish(self, status: str) -> None:
        self.run = None
        self._status = status
        if self.parameters is not None:
            self._blocker = self.place_blocker()

    def _finish_with_result(self, message: dict) -> None:
        try:
            status = self._show_result(message)
        except Exception as error:  # the run ends whatever went wrong, and the user is told what
            self._finish("Cannot show the landmarks.")
            self.on_error(f"Cannot show the landmarks: {error}")
        else:
            self._finish(status)

    def _show_result(self, message: dict) -> str:
        """Put the prediction into the captured segmentation's landmarks node; the status line to show."""
        run, prediction = self.run, message["prediction"]
        segmentation = run.segmentation
        if not self.scene.IsNodePresent(segmentation):
            return f"Segmentation {segmentation.GetName()!r} was removed during the run; no landmarks were placed."
        node = show_landmarks_for_segmentation(
            prediction, segmentation, run.protocol, confident_above=message["confident_above"]
        )
        placed = f"{int(prediction.placed.sum())} of {len(prediction.placed)} landmarks placed"
        to_check = f"{int((~prediction.confident).sum())} to check"
        parameters = self.parameters
        if parameters is None or parameters.inputSegmentation is not segmentation:
            return f"{placed} in {node.GetName()!r} (for {segmentation.GetName()!r}, no longer selected), {to_check}."
        if self.active and self._selection_matches(run):
            # The QA reads the label map the model read: started before the parameter changes, it is not built twice.
            self._start_qa(node, LandmarkQAContext.from_labels(run.labels, run.protocol), self._qa_key(node))
        parameters.landmarks = node
        return f"{placed}, {to_check}."

    def _selection_matches(self, run: CapturedRun) -> bool:
        """Whether the chosen CT and protocol are still those ``run`` read, so its label map serves the QA."""
        parameters = self.parameters
        try:
            reference = reference_volume(parameters.inputSegmentation, parameters.referenceVolume)
            return reference is run.reference_volume and self.protocol() == run.protocol
        except ValueError:
            return False

    # ------------------------------------------------------------------ live QA and the table

    def _qa_key(self, landmarks_node) -> tuple:
        parameters = self.parameters
        nodes = (landmarks_node, parameters.inputSegmentation, parameters.referenceVolume)
        return (*(node.GetID() if node else None for node in nodes), str(chosen_path(parameters.protocolFile)))

    def _refresh_qa(self) -> None:
        """Check the chosen landmarks against the chosen segmentation, live, unless that is already so."""
        parameters = self.parameters
        landmarks_node = parameters.landmarks
        if self._qa.key == self._qa_key(landmarks_node):
            if self._qa.observer is not None:
                self._qa.observer.snap_on_drop = parameters.snapToSurface
                self._qa.observer.snap_segment = SNAP_SEGMENTS[parameters.snapSegment]
            return
        if landmarks_node is None:
            self._stop_qa()
            self._qa.key = self._qa_key(None)
            return
        try:
            labels = landmark_labels(parameters.inputSegmentation, parameters.referenceVolume)
            context = LandmarkQAContext.from_labels(labels, self.protocol())
        except ValueError as error:
            self._stop_qa()
            rows = tuple(landmark_table(landmarks_node))
            self._qa = _QA(key=self._qa_key(landmarks_node), rows=rows, summary=f"No live QA: {error}")
            return
        self._start_qa(landmarks_node, context, self._qa_key(landmarks_node))

    def _start_qa(self, landmarks_node, context: LandmarkQAContext, key: tuple) -> None:
        self._stop_qa()
        self._qa.key = key
        parameters = self.parameters
        self._qa.observer = LandmarkQAObserver(
            landmarks_node,
            context,
            lambda report: self._on_qa_report(landmarks_node, report),
            snap_on_drop=parameters.snapToSurface,
            snap_segment=SNAP_SEGMENTS[parameters.snapSegment],
        )

    def _on_qa_report(self, landmarks_node, report: LandmarkQAReport) -> None:
        self._qa.rows = tuple(landmark_table(landmarks_node, report))
        self._qa.summary = report.summary
        self._notify()

    def _stop_qa(self) -> None:
        if self._qa.observer is not None:
            self._qa.observer.cleanup()
        self._qa = _QA()

    @property
    def qa_context(self) -> LandmarkQAContext | None:
        return None if self._qa.observer is None else self._qa.observer.context

    def jump_to_landmark(self, index: int) -> bool:
        """Centre the slice views on point ``index`` of the chosen landmarks; False when it is not placed."""
        node = self.parameters.landmarks
        if node is None:
            return False
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            self._status = f"{node.GetNthControlPointLabel(index)} is not placed yet."
            self._notify()
            return False
        module_logic(self.scene, "markups").JumpSlicesToNthPointInMarkup(node.GetID(), index, True)
        return True

    # ------------------------------------------------------------------ point lists

    def create_empty_landmarks(self) -> slicer.vtkMRMLMarkupsFiducialNode:
        """A new point list with every landmark of the protocol, unplaced, chosen for the table and QA."""
        node = create_landmarks_node(self.scene, self.protocol())
        show_in_views(node)
        self._status = f"Created {node.GetNumberOfControlPoints()} unplaced landmarks in {node.GetName()!r}."
        self.parameters.landmarks = node  # the parameter change draws the status too
        return node

    def create_pseudo_landmarks(self) -> slicer.vtkMRMLMarkupsFiducialNode:
        """Pseudo-landmarks of the chosen landmarks into their own (replaced) node, for shape modelling."""
        parameters = self.parameters
        landmarks_node = parameters.landmarks
        if not landmarks_node:
            raise ValueError("Choose or place the landmarks first.")
        context = self.qa_context if self._qa.key == self._qa_key(landmarks_node) else None
        if context is None:
            labels = landmark_labels(parameters.inputSegmentation, parameters.referenceVolume)
            context = LandmarkQAContext.from_labels(labels, self.protocol())
        node = update_pseudo_landmarks(landmarks_node, context, parameters.pseudoPerSegment)
        self._status = f"{node.GetNumberOfControlPoints()} pseudo-landmarks in {node.GetName()!r}."
        self._notify()
        return node

    # ------------------------------------------------------------------ export

    def export_to_dataset(self) -> str:
        """CT, corrected segmentation and landmarks under one case id, with the same writer as SternumSSM.

        Returns the summary, with the correction effort (Dice, changed voxels, landmark displacement).
        """
        from SternumSSMLib.export_nodes import export_from_scene

        parameters = self.parameters
        segmentation = parameters.inputSegmentation
        landmarks_node = parameters.landmarks
        result = export_from_scene(
            reference_volume(segmentation, parameters.referenceVolume),
            segmentation,
            parameters.datasetFolder,
            parameters.caseId,
            annotator=parameters.annotator,
            landmarks_node=landmarks_node,
            pseudo_landmarks_node=pseudo_landmarks_node(landmarks_node) if landmarks_node else None,
        )
        self._export_plan = self._plan_export()  # it now names the next version
        self._notify()
        return result.summary()

    def _landmark_export(self) -> tuple:
        """(landmarks node, folder, file stem, pseudo-landmarks node or None) of the landmarks-only export."""
        parameters = self.parameters
        landmarks_node, folder = parameters.landmarks, chosen_path(parameters.landmarksFolder)
        if not landmarks_node or folder is None:
            raise ValueError("Choose the landmarks and an output folder.")
        stem = landmark_file_stem(parameters.caseId, landmarks_node.GetName())
        return landmarks_node, folder, stem, pseudo_landmarks_node(landmarks_node)

    def existing_landmark_files(self) -> list[Path]:
        """The files a landmarks-only export would replace (ask first)."""
        _node, folder, stem, pseudo_node = self._landmark_export()
        paths = landmark_export_paths(folder, stem, with_pseudo=pseudo_node is not None).values()
        return [path for path in paths if path.exists()]

    def export_landmarks_only(self, overwrite: bool = False) -> list[Path]:
        """The landmarks as CSV (coordinate system declared in its header) and .mrk.json, pseudo-landmarks beside."""
        landmarks_node, folder, stem, pseudo_node = self._landmark_export()
        return export_landmarks(
            landmarks_node,
            folder,
            stem,
            self.parameters.csvCoordinateSystem,
            pseudo_node=pseudo_node,
            overwrite=overwrite,
        )
