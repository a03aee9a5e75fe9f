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
The panel's workflow is ``SternumLandmarksLib.landmark_panel.LandmarkPanel``; the
widget here only forwards Qt signals to it and draws its state.
"""

import time
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
            " Requires 3D Slicer 5.10 or later and the PyTorch extension. The user guide is in the"
            ' <a href="https://github.com/sternum-ssm/SlicerSternumSSM#readme">README</a>.'
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
    """Binds the panel's widgets to :class:`LandmarkPanel`, which holds the workflow."""

    # Background of the table rows that need a look (low confidence, unplaced, flagged by the QA).
    CHECK_COLOR = (255, 140, 0, 90)

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SternumLandmarksLogic | None = None
        self.panel = None
        self._parameterNode: SternumLandmarksParameterNode | None = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        from SternumLandmarksLib.landmark_panel import LandmarkPanel

        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SternumLandmarks.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui forwards mrmlSceneChanged to every node selector, so this one call sets them all.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SternumLandmarksLogic()
        self.panel = LandmarkPanel(slicer.mrmlScene, on_state=self.drawState, on_error=slicer.util.errorDisplay)
        self._placeToolTip = self.ui.placeLandmarksButton.toolTip

        # Closing the scene deletes the parameter node; drop it first and bind a new one afterwards.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The prediction runs in a worker process; this timer hands its messages to the panel.
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(100)
        self.pollTimer.connect("timeout()", self.onPollTimer)
        self.ui.placeLandmarksButton.connect("clicked(bool)", self.onPlaceLandmarksButton)
        self.ui.cancelButton.connect("clicked(bool)", self.panel.cancel)
        self.ui.createEmptyButton.connect("clicked(bool)", self.onCreateEmptyButton)
        self.ui.landmarksTableWidget.connect("cellClicked(int,int)", self.onTableCellClicked)
        self.ui.pseudoLandmarksButton.connect("clicked(bool)", self.onPseudoLandmarksButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportLandmarksButton.connect("clicked(bool)", self.onExportLandmarksButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.pollTimer.stop()
        self.panel.cleanup()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload both Lib packages with this file, as SlicerNNUNet and SlicerMONAIAuto3DSeg do.

        Slicer's reload re-reads only the module file; dropping the packages from ``sys.modules``
        makes this file's imports read the edited Lib files again.
        """
        from SternumSSMLib.module_reload import forget_library_packages

        forget_library_packages()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # As Slicer's 5.10 template: only the GUI is disconnected. The parameter node stays, and so
        # does a run in progress, whose result still lands where it was started.
        self.disconnectParameterNode()
        self.panel.exit()

    def onSceneStartClose(self, caller, event) -> None:
        self.disconnectParameterNode()
        self._parameterNode = None
        self.panel.scene_closing()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.disconnectParameterNode()
        self._parameterNode = self.logic.getParameterNode()
        # Binds every widget whose SlicerParameterName property names a parameter (see the .ui file).
        self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
        self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.panel.enter(self._parameterNode)

    def disconnectParameterNode(self) -> None:
        # The tag is None once disconnected (after exit()), so enter() does not disconnect twice.
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self.panel.parameters_changed()

    def drawState(self, state) -> None:
        """Show the panel's :class:`PanelState`."""
        self.ui.placeLandmarksButton.enabled = state.place_enabled
        self.ui.placeLandmarksButton.toolTip = state.place_blocker or self._placeToolTip
        self.ui.cancelButton.enabled = state.cancel_enabled
        self.ui.progressBar.value = state.progress_percent
        self.ui.statusLabel.text = state.status or state.place_blocker
        self.ui.qaSummaryLabel.text = state.qa_summary
        self.ui.exportButton.enabled = state.export_enabled
        self.ui.exportLandmarksButton.enabled = state.export_landmarks_enabled
        self.ui.exportPlanLabel.text = state.export_plan
        self.drawTable(state.rows)

    def drawTable(self, rows) -> None:
        """One row per landmark: confidence, distance to the surface, QA state; rows to check are highlighted."""
        table = self.ui.landmarksTableWidget
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

    # Placing landmarks

    def onPlaceLandmarksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Landmark placement could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            moved = self.panel.moved_landmarks()
            if moved and not slicer.util.confirmYesNoDisplay(
                _(
                    "You moved {count} landmarks of this segmentation ({ids}). Placing landmarks again replaces them"
                    " with the new prediction. Replace them?"
                ).format(count=len(moved), ids=", ".join(moved))
            ):
                return
            self.panel.start_placement()
            self.pollTimer.start()

    def onPollTimer(self) -> None:
        # Keeps ticking after exit(): a run's result lands on the segmentation it was started for.
        if not self.panel.poll():
            self.pollTimer.stop()

    def onCreateEmptyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to create the landmark set."), waitCursor=True):
            self.panel.create_empty_landmarks()

    # Live QA and the table

    def onTableCellClicked(self, row: int, column: int) -> None:
        self.panel.jump_to_landmark(row)

    def onPseudoLandmarksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot compute the pseudo-landmarks."), waitCursor=True):
            self.panel.create_pseudo_landmarks()

    # Export

    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export to the dataset failed."), waitCursor=True):
            self.ui.exportResultTextEdit.plainText = self.panel.export_to_dataset()

    def onExportLandmarksButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Exporting the landmarks failed."), waitCursor=True):
            existing = self.panel.existing_landmark_files()
            if existing and not slicer.util.confirmYesNoDisplay(
                _("{files} already exist. Replace them?").format(files=", ".join(path.name for path in existing))
            ):
                return
            paths = self.panel.export_landmarks_only(overwrite=bool(existing))
            self.ui.exportResultTextEdit.plainText = _("Written:") + "\n" + "\n".join(f"  {path}" for path in paths)


#
# SternumLandmarksLogic
#


class SternumLandmarksLogic(ScriptedLoadableModuleLogic):
    """The parameter node and the first-use install; the workflow itself is ``LandmarkPanel``, which needs no GUI."""

    def getParameterNode(self) -> SternumLandmarksParameterNode:
        return SternumLandmarksParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        """torch through the PyTorch extension, the rest through pip; asks first, never at import."""
        from SternumSSMLib.dependencies import ensure_in_slicer

        return ensure_in_slicer("landmarks")


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
        from SternumLandmarksLib.landmark_panel import LandmarkPanel

        self.delayDisplay("Empty landmark set")
        panel = LandmarkPanel(slicer.mrmlScene)
        panel.enter(SternumLandmarksLogic().getParameterNode())
        landmarksNode = panel.create_empty_landmarks()

        self.assertEqual(landmarksNode.GetNumberOfControlPoints(), 34)
        for index in range(34):
            self.assertEqual(landmarksNode.GetNthControlPointLabel(index), f"L{index + 1:02d}")
            # Unplaced: the point exists with its name but has no position yet.
            self.assertNotEqual(landmarksNode.GetNthControlPointPositionStatus(index), landmarksNode.PositionDefined)
            self.assertFalse(landmarksNode.GetNthControlPointLocked(index))
        self.assertTrue(landmarksNode.GetDisplayNode().GetPointLabelsVisibility())
        panel.cleanup()

    def test_ParameterDefaults(self) -> None:
        from SternumLandmarksLib.landmark_panel import LandmarkPanel

        self.delayDisplay("Parameter defaults")
        parameterNode = SternumLandmarksLogic().getParameterNode()
        self.assertEqual(parameterNode.snapSegment, "Both")
        self.assertFalse(parameterNode.snapToSurface)
        self.assertEqual(parameterNode.pseudoPerSegment, 3)
        self.assertEqual(parameterNode.csvCoordinateSystem, "LPS")
        panel = LandmarkPanel(slicer.mrmlScene)
        panel.enter(parameterNode)
        self.assertEqual(len(panel.protocol()), 34)
        self.assertEqual(panel.state().place_blocker, "Choose the sternum segmentation.")

    def test_PlaceLandmarksOnPhantom(self) -> None:
        """Segmentation -> bundled model in the worker process -> landmarks node with live QA."""
        import importlib.util

        from SternumLandmarksLib.landmark_panel import LandmarkPanel
        from SternumSSMLib.phantom import PhantomParameters, generate_phantom
        from SternumSSMLib.prediction_nodes import show_prediction
        from SternumSSMLib.volume_nodes import volume_node_from_volume

        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("Placement not tested: torch is not installed (Place landmarks offers to install it)")
            return
        self.delayDisplay("Place landmarks on a phantom")
        phantom = generate_phantom(PhantomParameters(spacing=(2.0, 2.0, 2.0)))
        ct = volume_node_from_volume(slicer.mrmlScene, phantom.image, "CT")
        segmentation = show_prediction(slicer.mrmlScene, phantom.labels, ct, record={})
        parameterNode = SternumLandmarksLogic().getParameterNode()
        states, errors = [], []
        panel = LandmarkPanel(slicer.mrmlScene, on_state=states.append, on_error=errors.append)
        panel.enter(parameterNode)
        self.assertIs(parameterNode.inputSegmentation, segmentation)  # the newest prediction, chosen by default

        try:
            panel.start_placement()
            deadline = time.monotonic() + 300.0
            while panel.poll():
                self.assertLess(time.monotonic(), deadline, "no landmarks within 300 s")
                time.sleep(0.1)
            self.assertEqual(errors, [])
            landmarksNode = parameterNode.landmarks
            self.assertEqual(landmarksNode.GetNumberOfControlPoints(), 34)
            self.assertEqual(len(states[-1].rows), 34)

            # Live QA: moving a point updates the table; a re-run would now ask before replacing it.
            index = next(
                i
                for i in range(34)
                if landmarksNode.GetNthControlPointPositionStatus(i) == landmarksNode.PositionDefined
            )
            count = len(states)
            position = landmarksNode.GetNthControlPointPositionWorld(index)
            landmarksNode.SetNthControlPointPositionWorld(index, position[0], position[1], position[2] + 5.0)
            self.assertGreater(len(states), count)
            self.assertEqual(states[-1].rows[index].state.split(",")[0], "moved")
            self.assertEqual(panel.moved_landmarks(), [landmarksNode.GetNthControlPointLabel(index)])
        finally:
            panel.cleanup()
