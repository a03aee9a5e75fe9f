"""SternumLandmarks: place the 34 sternum landmarks on a sternum segmentation.

This file is the Slicer glue only: module description, typed parameters, widget,
a thin logic and the self-test. Qt-free work lives in ``SternumLandmarksLib``.
The landmark protocol and the rest of the anatomy come from ``SternumSSMLib``,
the one place that defines them, which belongs to the SternumSSM module.

How ``SternumSSMLib`` becomes importable from here:

- installed extension: both modules are installed into the same
  ``lib/Slicer-X.Y/qt-scripted-modules/`` folder, which is on ``sys.path``;
- from a checkout: add both module folders, ``SternumSSM/`` and
  ``SternumLandmarks/``, under Application Settings > Modules > Additional module
  paths.

The library packages are imported where they are used, not at the top of this
file, so that the module loads whatever order Slicer reads the two folders in.
"""

from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# SternumLandmarks
#


class SternumLandmarks(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Sternum Landmarks")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # The anatomy and the landmark protocol live in SternumSSM's library.
        self.parent.dependencies = ["SternumSSM"]
        self.parent.contributors = ["SternumSSM contributors"]
        self.parent.helpText = _(
            "Places 34 named anatomical landmarks on the outline of the manubrium and sternal body, predicted"
            " from a (corrected) sternum segmentation. The points are ordinary markups the annotator can drag;"
            " low-confidence points are drawn in orange, and a table lists each point's confidence, distance to"
            " the bone surface and QA flags, updated while a point is dragged (click a row to jump to the point)."
            " 'Create empty landmark set' adds the 34 named points unplaced, for placing them by hand."
            " Pseudo-landmarks densify the outline between the landmarks for shape modelling."
        )
        self.parent.acknowledgementText = _(
            "The landmark protocol and the landmark network follow the Chalmers 2025 study: A. Alexandersson and"
            " A. Molnö, <i>Deep Learning for Segmentation and Landmarking of the Human Anatomy: Applying nnU-Net"
            " and SpatialConfiguration-Net to Automate Statistical Shape Modeling for Sternum and Costal"
            " Cartilage</i>, master's thesis, Chalmers University of Technology, Gothenburg, 2025. The network is"
            " SpatialConfiguration-Net (Payer et al., Medical Image Analysis, 2019)."
        )


#
# SternumLandmarksParameterNode
#


@parameterNodeWrapper
class SternumLandmarksParameterNode:
    """What the user chose; saved with the scene.

    inputSegmentation - sternum segmentation with Manubrium and Sternal_body segments.
    referenceVolume - the CT it was made on; left empty, the CT SternumSSM segmented.
    modelFolder - trained landmark model folder; empty means the bundled demo model.
    protocolFile - landmark protocol JSON; empty means the built-in 34-point protocol.
    landmarks - the landmark point list shown in the table, checked live and exported.
    snapToSurface, snapSegment - move a dropped point onto the surface of that segment.
    pseudoPerSegment - pseudo-landmarks between each pair of neighbouring landmarks.
    datasetFolder, caseId, annotator - the dataset export, as in the SternumSSM module.
    landmarksFolder, csvCoordinateSystem - the landmarks-only export (CSV and .mrk.json).
    """

    inputSegmentation: vtkMRMLSegmentationNode
    referenceVolume: vtkMRMLScalarVolumeNode
    modelFolder: Path
    protocolFile: Path
    landmarks: vtkMRMLMarkupsFiducialNode
    snapToSurface: bool = False
    snapSegment: Annotated[str, Choice(["Both", "Manubrium", "Sternal body"])] = "Both"
    pseudoPerSegment: Annotated[int, WithinRange(1, 20)] = 3
    datasetFolder: Path
    caseId: str = ""
    annotator: str = ""
    landmarksFolder: Path
    csvCoordinateSystem: Annotated[str, Choice(["LPS", "RAS"])] = "LPS"


#
# SternumLandmarksWidget
#


class SternumLandmarksWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    # Background of the table rows that need a look (low confidence, unplaced, flagged by the QA).
    CHECK_COLOR = (255, 140, 0, 90)

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SternumLandmarksLogic | None = None
        self._parameterNode: SternumLandmarksParameterNode | None = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SternumLandmarks.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui forwards mrmlSceneChanged to every node selector, so this one call sets them all.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SternumLandmarksLogic()

        # Closing the scene deletes the parameter node; drop it first and bind a new one afterwards.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The prediction runs on a worker thread; this timer drains its messages on the GUI thread.
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(100)
        self.pollTimer.connect("timeout()", self.onPollPrediction)
        self.ui.placeLandmarksButton.connect("clicked(bool)", self.onPlaceLandmarksButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.placeLandmarksButton.enabled, self.ui.cancelButton.enabled = True, False
        self.ui.createEmptyButton.connect("clicked(bool)", self.onCreateEmptyButton)

        self.ui.landmarksTableWidget.connect("cellClicked(int,int)", self.onTableCellClicked)
        self.ui.pseudoLandmarksButton.connect("clicked(bool)", self.onPseudoLandmarksButton)

        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportLandmarksButton.connect("clicked(bool)", self.onExportLandmarksButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.pollTimer.stop()
        self.logic.cancelPrediction()
        self.logic.stopQA()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # Stop pushing parameter changes into a hidden GUI (and stop the live QA); enter() reconnects.
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputSegmentation:
            self._parameterNode.inputSegmentation = self.logic.defaultInputSegmentation()

    def setParameterNode(self, parameterNode: SternumLandmarksParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.logic.stopQA()
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Binds every widget whose SlicerParameterName property names a parameter (see the .ui file).
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self.updateExportPlan()
        if self.logic.qaIsStale(self._parameterNode):
            self.startQA()
        else:
            self.logic.applySnapSettings(self._parameterNode)

    # Placing landmarks

    def onPlaceLandmarksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Landmark placement could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            moved = self.logic.movedLandmarks(self._parameterNode)
            if moved and not slicer.util.confirmYesNoDisplay(
                _(
                    "You moved {count} landmarks of this segmentation ({ids}). Placing landmarks again replaces them"
                    " with the new prediction. Replace them?"
                ).format(count=len(moved), ids=", ".join(moved))
            ):
                return
            self.logic.startPrediction(self._parameterNode)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Placing landmarks...")
            self.ui.placeLandmarksButton.enabled, self.ui.cancelButton.enabled = False, True
            self.pollTimer.start()

    def onCancelButton(self) -> None:
        self.logic.cancelPrediction()
        self.ui.statusLabel.text = _("Cancelling...")

    def stopPolling(self, status: str) -> None:
        self.pollTimer.stop()
        self.ui.placeLandmarksButton.enabled, self.ui.cancelButton.enabled = True, False
        self.ui.statusLabel.text = status

    def onPollPrediction(self) -> None:
        for message in self.logic.pollPrediction():
            event = message["event"]
            if event == "progress":
                self.ui.progressBar.value = int(100 * message["fraction"])
                self.ui.statusLabel.text = message["text"]
            elif event == "done":
                self.stopPolling(_("Done."))
                with slicer.util.tryWithErrorDisplay(_("Cannot show the landmarks."), waitCursor=True):
                    prediction = message["prediction"]
                    self.logic.showPrediction(prediction, self._parameterNode, self.onQAReport)
                    self.ui.statusLabel.text = _("{placed} of {count} landmarks placed, {low} to check.").format(
                        placed=int(prediction.placed.sum()),
                        count=len(prediction.placed),
                        low=int((~prediction.confident).sum()),
                    )
            elif event == "cancelled":
                self.stopPolling(_("Cancelled."))
            elif event == "error":
                self.stopPolling(_("Landmark placement failed."))
                slicer.util.errorDisplay(_("Landmark placement failed: {detail}").format(detail=message["message"]))

    def onCreateEmptyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to create the landmark set."), waitCursor=True):
            landmarksNode = self.logic.createEmptyLandmarks(self._parameterNode.protocolFile)
            self._parameterNode.landmarks = landmarksNode  # the table and the live QA follow
            self.ui.statusLabel.text = _("Created {count} unplaced landmarks in '{name}'.").format(
                count=landmarksNode.GetNumberOfControlPoints(), name=landmarksNode.GetName()
            )

    # Live QA and the table

    def startQA(self) -> None:
        """Check the chosen landmarks against the chosen segmentation, live; the table follows every drag."""
        landmarksNode = self._parameterNode.landmarks
        try:
            self.logic.startQA(landmarksNode, self._parameterNode, self.onQAReport)
        except ValueError as error:
            self.onQAReport(landmarksNode, None)
            self.ui.qaSummaryLabel.text = _("No live QA: {reason}").format(reason=error)

    def onQAReport(self, landmarksNode: vtkMRMLMarkupsFiducialNode | None, report) -> None:
        """One row per landmark: confidence, distance to the surface, QA state; rows to check are highlighted."""
        table = self.ui.landmarksTableWidget
        rows = self.logic.tableRows(landmarksNode, report) if landmarksNode else []
        table.setRowCount(len(rows))
        highlight = qt.QBrush(qt.QColor(*self.CHECK_COLOR))
        for index, row in enumerate(rows):
            for column, text in enumerate(row.cells()):
                item = qt.QTableWidgetItem(text)
                item.setToolTip("\n".join(part for part in (row.description, row.details) if part))
                if row.needs_check:
                    item.setBackground(highlight)
                table.setItem(index, column, item)
        table.resizeColumnsToContents()
        self.ui.qaSummaryLabel.text = report.summary if report is not None else ""

    def onTableCellClicked(self, row: int, column: int) -> None:
        landmarksNode = self._parameterNode.landmarks
        if landmarksNode and not self.logic.jumpToLandmark(landmarksNode, row):
            self.ui.statusLabel.text = _("{label} is not placed yet.").format(
                label=landmarksNode.GetNthControlPointLabel(row)
            )

    def onPseudoLandmarksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot compute the pseudo-landmarks."), waitCursor=True):
            pseudoNode = self.logic.createPseudoLandmarks(self._parameterNode)
            self.ui.statusLabel.text = _("{count} pseudo-landmarks in '{name}'.").format(
                count=pseudoNode.GetNumberOfControlPoints(), name=pseudoNode.GetName()
            )

    # Export

    def updateExportPlan(self) -> None:
        """Say what a dataset export would write, and enable each export only when it can run."""
        node = self._parameterNode
        ready = bool(node.inputSegmentation and node.caseId and self.logic.chosenPath(node.datasetFolder))
        self.ui.exportButton.enabled = ready
        self.ui.exportLandmarksButton.enabled = bool(node.landmarks and self.logic.chosenPath(node.landmarksFolder))
        if not ready:
            self.ui.exportPlanLabel.text = _("Choose the segmentation, a dataset folder and a case id.")
            return
        self.ui.exportPlanLabel.text = self.logic.describeExport(node.datasetFolder, node.caseId)

    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export to the dataset failed."), waitCursor=True):
            self.ui.exportResultTextEdit.plainText = self.logic.exportToDataset(self._parameterNode)
            self.updateExportPlan()

    def onExportLandmarksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Exporting the landmarks failed."), waitCursor=True):
            existing = self.logic.existingLandmarkFiles(self._parameterNode)
            if existing and not slicer.util.confirmYesNoDisplay(
                _("{files} already exist. Replace them?").format(files=", ".join(path.name for path in existing))
            ):
                return
            paths = self.logic.exportLandmarksOnly(self._parameterNode, overwrite=bool(existing))
            self.ui.exportResultTextEdit.plainText = _("Written:") + "\n" + "\n".join(f"  {path}" for path in paths)


#
# SternumLandmarksLogic
#


class SternumLandmarksLogic(ScriptedLoadableModuleLogic):
    """Slicer-side entry point; the work itself lives in the Lib packages and needs no GUI.

    Like Slicer's LineProfile logic it owns the observer on the markups node (here a
    ``LandmarkQAObserver``) that recomputes the QA whenever a point moves.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.run = None  # the BackgroundPrediction in progress or last finished
        self._model = None  # LandmarkModel, kept while the folder stays the same
        self.qaObserver = None
        self._qaKey = None

    def getParameterNode(self) -> SternumLandmarksParameterNode:
        return SternumLandmarksParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        """torch through the PyTorch extension, the landmark network through pip; asks first, never at import."""
        from SternumSSMLib.dependencies import ensure_packages_in_slicer

        requirements = {"landmarker": "landmarker==0.4.1"}
        return ensure_packages_in_slicer(requirements, _("SternumLandmarks (the landmark network)"))

    @staticmethod
    def chosenPath(path: Path | None) -> Path | None:
        """The path the user chose, or None for the empty path an untouched path field gives."""
        return None if path is None or str(path) in ("", ".") else Path(path)

    def modelFolder(self, parameterNode: SternumLandmarksParameterNode) -> Path:
        from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL

        return self.chosenPath(parameterNode.modelFolder) or BUNDLED_LANDMARK_MODEL

    def protocol(self, parameterNode: SternumLandmarksParameterNode):
        from SternumSSMLib.anatomy import load_protocol

        return load_protocol(self.chosenPath(parameterNode.protocolFile))

    def defaultInputSegmentation(self) -> vtkMRMLSegmentationNode | None:
        from SternumLandmarksLib.landmark_session import default_input_segmentation

        return default_input_segmentation(slicer.mrmlScene)

    def landmarkModel(self, folder: Path):
        """The model in ``folder``, loaded once; runs on the prediction thread."""
        from SternumLandmarksLib.landmark_prediction import LandmarkModel

        if self._model is None or self._model.folder != folder:
            self._model = LandmarkModel(folder)
        return self._model

    # Prediction

    def movedLandmarks(self, parameterNode: SternumLandmarksParameterNode) -> list[str]:
        """Ids of the points a new run would replace after the user moved them."""
        from SternumLandmarksLib.landmark_session import replaced_points

        return replaced_points(parameterNode.inputSegmentation)

    def startPrediction(self, parameterNode: SternumLandmarksParameterNode) -> None:
        """Read the segmentation here (MRML stays on the GUI thread) and predict on a worker thread."""
        from SternumLandmarksLib.landmark_session import BackgroundPrediction, landmark_inputs

        labels, ct = landmark_inputs(parameterNode.inputSegmentation, parameterNode.referenceVolume)
        folder = self.modelFolder(parameterNode)
        self.run = BackgroundPrediction(lambda: self.landmarkModel(folder), labels, ct)

    def pollPrediction(self) -> list:
        return self.run.poll() if self.run is not None else []

    def cancelPrediction(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def showPrediction(
        self, prediction, parameterNode: SternumLandmarksParameterNode, onQAUpdate
    ) -> vtkMRMLMarkupsFiducialNode:
        """Put the prediction into the segmentation's landmarks node (replacing its points) and check it live."""
        from SternumLandmarksLib.landmark_qa import LandmarkQAContext
        from SternumLandmarksLib.landmark_session import show_landmarks_for_segmentation

        protocol = self.protocol(parameterNode)
        landmarksNode = show_landmarks_for_segmentation(
            prediction, parameterNode.inputSegmentation, protocol, confident_above=self._model.config.confident_above
        )
        # The QA reads the label map the model read. Started before the parameter changes, it is not built twice;
        # when it cannot be built, the parameter change starts it and says why.
        try:
            self.startQA(
                landmarksNode, parameterNode, onQAUpdate, LandmarkQAContext.from_labels(self.run.labels, protocol)
            )
        except ValueError:
            self.stopQA()
        parameterNode.landmarks = landmarksNode
        return landmarksNode

    def createEmptyLandmarks(self, protocolFile: Path | None = None) -> vtkMRMLMarkupsFiducialNode:
        """A new point list holding every landmark of the protocol, named, unplaced and unlocked.

        An empty ``protocolFile`` (None, or the empty path an untouched path field gives) selects the
        built-in 34-point sternum protocol.
        """
        from SternumLandmarksLib.markups import create_landmarks_node
        from SternumSSMLib.anatomy import load_protocol

        return create_landmarks_node(slicer.mrmlScene, load_protocol(self.chosenPath(protocolFile)))

    # Live QA

    @staticmethod
    def _qaKeyOf(landmarksNode, parameterNode: SternumLandmarksParameterNode) -> tuple:
        nodes = (landmarksNode, parameterNode.inputSegmentation, parameterNode.referenceVolume)
        return (*(node.GetID() if node else None for node in nodes), str(parameterNode.protocolFile))

    def qaIsStale(self, parameterNode: SternumLandmarksParameterNode) -> bool:
        """Whether the live QA watches other landmarks, or against another segmentation, than those chosen."""
        return self._qaKeyOf(parameterNode.landmarks, parameterNode) != self._qaKey

    def startQA(self, landmarksNode, parameterNode: SternumLandmarksParameterNode, onUpdate, context=None) -> None:
        """Recompute the QA of ``landmarksNode`` whenever a point moves and hand it to ``onUpdate(node, report)``.

        ``context`` is built from the chosen segmentation when not given (a ValueError says why it cannot be).
        """
        from SternumLandmarksLib.landmark_observer import LandmarkQAObserver
        from SternumLandmarksLib.landmark_qa import LandmarkQAContext
        from SternumLandmarksLib.landmark_session import SNAP_SEGMENTS, landmark_labels

        self.stopQA()
        self._qaKey = self._qaKeyOf(landmarksNode, parameterNode)
        if landmarksNode is None:
            onUpdate(None, None)
            return
        if context is None:
            labels = landmark_labels(parameterNode.inputSegmentation, parameterNode.referenceVolume)
            context = LandmarkQAContext.from_labels(labels, self.protocol(parameterNode))
        self.qaObserver = LandmarkQAObserver(
            landmarksNode,
            context,
            lambda report: onUpdate(landmarksNode, report),
            snap_on_drop=parameterNode.snapToSurface,
            snap_segment=SNAP_SEGMENTS[parameterNode.snapSegment],
        )

    def applySnapSettings(self, parameterNode: SternumLandmarksParameterNode) -> None:
        from SternumLandmarksLib.landmark_session import SNAP_SEGMENTS

        if self.qaObserver is not None:
            self.qaObserver.snap_on_drop = parameterNode.snapToSurface
            self.qaObserver.snap_segment = SNAP_SEGMENTS[parameterNode.snapSegment]

    def stopQA(self) -> None:
        if self.qaObserver is not None:
            self.qaObserver.cleanup()
        self.qaObserver = None
        self._qaKey = None

    def tableRows(self, landmarksNode: vtkMRMLMarkupsFiducialNode, report) -> list:
        from SternumLandmarksLib.landmark_session import landmark_table

        return landmark_table(landmarksNode, report)

    def jumpToLandmark(self, landmarksNode: vtkMRMLMarkupsFiducialNode, index: int) -> bool:
        """Centre the slice views on point ``index``; False when it is not placed."""
        if landmarksNode.GetNthControlPointPositionStatus(index) != landmarksNode.PositionDefined:
            return False
        slicer.modules.markups.logic().JumpSlicesToNthPointInMarkup(landmarksNode.GetID(), index, True)
        return True

    def createPseudoLandmarks(self, parameterNode: SternumLandmarksParameterNode) -> vtkMRMLMarkupsFiducialNode:
        """Pseudo-landmarks of the chosen landmarks into their own (replaced) node, for shape modelling."""
        from SternumLandmarksLib.landmark_qa import LandmarkQAContext
        from SternumLandmarksLib.landmark_session import landmark_labels, update_pseudo_landmarks

        landmarksNode = parameterNode.landmarks
        if not landmarksNode:
            raise ValueError(_("Choose or place the landmarks first."))
        if self.qaObserver is not None and self.qaObserver.node is landmarksNode:
            context = self.qaObserver.context
        else:
            labels = landmark_labels(parameterNode.inputSegmentation, parameterNode.referenceVolume)
            context = LandmarkQAContext.from_labels(labels, self.protocol(parameterNode))
        return update_pseudo_landmarks(landmarksNode, context, parameterNode.pseudoPerSegment)

    # Export

    def describeExport(self, datasetFolder: Path, caseId: str) -> str:
        from SternumSSMLib.export import describe_export

        return describe_export(datasetFolder, caseId)

    def exportToDataset(self, parameterNode: SternumLandmarksParameterNode) -> str:
        """CT, corrected segmentation and landmarks under one case id, with the same writer as SternumSSM.

        Returns the summary, with the correction effort (Dice, changed voxels, landmark displacement).
        """
        from SternumLandmarksLib.landmark_session import pseudo_landmarks_node, reference_volume
        from SternumSSMLib.export import export_from_scene

        segmentationNode = parameterNode.inputSegmentation
        landmarksNode = parameterNode.landmarks
        result = export_from_scene(
            reference_volume(segmentationNode, parameterNode.referenceVolume),
            segmentationNode,
            parameterNode.datasetFolder,
            parameterNode.caseId,
            annotator=parameterNode.annotator,
            landmarks_node=landmarksNode,
            pseudo_landmarks_node=pseudo_landmarks_node(landmarksNode) if landmarksNode else None,
        )
        return result.summary()

    def _landmarkExport(self, parameterNode: SternumLandmarksParameterNode) -> tuple:
        """(landmarks node, folder, file stem, pseudo-landmarks node or None) of the landmarks-only export."""
        from SternumLandmarksLib.landmark_session import landmark_file_stem, pseudo_landmarks_node

        landmarksNode, folder = parameterNode.landmarks, self.chosenPath(parameterNode.landmarksFolder)
        if not landmarksNode or folder is None:
            raise ValueError(_("Choose the landmarks and an output folder."))
        stem = landmark_file_stem(parameterNode.caseId, landmarksNode.GetName())
        return landmarksNode, folder, stem, pseudo_landmarks_node(landmarksNode)

    def existingLandmarkFiles(self, parameterNode: SternumLandmarksParameterNode) -> list[Path]:
        from SternumLandmarksLib.landmark_session import landmark_export_paths

        _node, folder, stem, pseudoNode = self._landmarkExport(parameterNode)
        paths = landmark_export_paths(folder, stem, with_pseudo=pseudoNode is not None).values()
        return [path for path in paths if path.exists()]

    def exportLandmarksOnly(self, parameterNode: SternumLandmarksParameterNode, overwrite: bool = False) -> list[Path]:
        """The landmarks as CSV (coordinate system declared in its header) and .mrk.json, pseudo-landmarks beside."""
        from SternumLandmarksLib.landmark_session import export_landmarks

        landmarksNode, folder, stem, pseudoNode = self._landmarkExport(parameterNode)
        return export_landmarks(
            landmarksNode, folder, stem, parameterNode.csvCoordinateSystem, pseudo_node=pseudoNode, overwrite=overwrite
        )


#
# SternumLandmarksTest
#


class SternumLandmarksTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test, or ctest); the pytest suite in Testing/ covers the library."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_CreateEmptyLandmarks()
        self.setUp()
        self.test_ParameterDefaults()
        self.setUp()
        self.test_PlaceLandmarksOnPhantom()

    def test_CreateEmptyLandmarks(self) -> None:
        self.delayDisplay("Empty landmark set")
        landmarksNode = SternumLandmarksLogic().createEmptyLandmarks()

        self.assertEqual(landmarksNode.GetNumberOfControlPoints(), 34)
        for index in range(34):
            self.assertEqual(landmarksNode.GetNthControlPointLabel(index), f"L{index + 1:02d}")
            # Unplaced: the point exists with its name but has no position yet.
            self.assertNotEqual(landmarksNode.GetNthControlPointPositionStatus(index), landmarksNode.PositionDefined)
            self.assertFalse(landmarksNode.GetNthControlPointLocked(index))

    def test_ParameterDefaults(self) -> None:
        self.delayDisplay("Parameter defaults")
        logic = SternumLandmarksLogic()
        parameterNode = logic.getParameterNode()
        self.assertEqual(parameterNode.snapSegment, "Both")
        self.assertFalse(parameterNode.snapToSurface)
        self.assertEqual(parameterNode.pseudoPerSegment, 3)
        self.assertEqual(parameterNode.csvCoordinateSystem, "LPS")
        self.assertEqual(len(logic.protocol(parameterNode)), 34)

    def test_PlaceLandmarksOnPhantom(self) -> None:
        """Segmentation -> bundled model on the worker thread -> landmarks node with live QA."""
        from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL
        from SternumSSMLib.phantom import PhantomParameters, generate_phantom
        from SternumSSMLib.prediction_nodes import show_prediction
        from SternumSSMLib.volume_nodes import volume_node_from_volume

        if not BUNDLED_LANDMARK_MODEL.is_dir():
            self.delayDisplay("No bundled landmark model: placement not tested")
            return
        self.delayDisplay("Place landmarks on a phantom")
        phantom = generate_phantom(PhantomParameters(spacing=(2.0, 2.0, 2.0)))
        ct = volume_node_from_volume(slicer.mrmlScene, phantom.image, "CT")
        segmentation = show_prediction(slicer.mrmlScene, phantom.labels, ct, record={})
        logic = SternumLandmarksLogic()
        parameterNode = logic.getParameterNode()
        self.assertIs(logic.defaultInputSegmentation(), segmentation)
        parameterNode.inputSegmentation = segmentation  # the reference CT comes from the segmentation

        logic.startPrediction(parameterNode)
        logic.run.wait(300)
        messages = logic.pollPrediction()
        self.assertEqual(messages[-1]["event"], "done", messages[-1])
        reports = []
        landmarksNode = logic.showPrediction(
            messages[-1]["prediction"], parameterNode, lambda node, report: reports.append(report)
        )
        self.assertEqual(landmarksNode.GetNumberOfControlPoints(), 34)
        self.assertEqual(parameterNode.landmarks.GetID(), landmarksNode.GetID())
        self.assertEqual(len(logic.tableRows(landmarksNode, reports[-1])), 34)

        # Live QA: moving a point gives a new report; a re-run would now ask before replacing it.
        index = next(
            i for i in range(34) if landmarksNode.GetNthControlPointPositionStatus(i) == landmarksNode.PositionDefined
        )
        count = len(reports)
        position = landmarksNode.GetNthControlPointPositionWorld(index)
        landmarksNode.SetNthControlPointPositionWorld(index, position[0], position[1], position[2] + 5.0)
        self.assertGreater(len(reports), count)
        self.assertEqual(logic.movedLandmarks(parameterNode), [landmarksNode.GetNthControlPointLabel(index)])
        logic.stopQA()
