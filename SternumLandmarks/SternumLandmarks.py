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

import qt
import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
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
            " low-confidence points and two points predicted onto the same spot are flagged."
            " 'Create empty landmark set' adds the 34 named points unplaced, for placing them by hand."
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
    referenceVolume - the CT it was made on.
    modelFolder - trained landmark model folder.
    protocolFile - landmark protocol JSON; empty means the built-in 34-point protocol.
    """

    inputSegmentation: vtkMRMLSegmentationNode
    referenceVolume: vtkMRMLScalarVolumeNode
    modelFolder: Path
    protocolFile: Path


#
# SternumLandmarksWidget
#


class SternumLandmarksWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
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

        # No prediction runs yet. The buttons stay visible but disabled, and say why.
        pending = _("Landmark prediction arrives with the SpatialConfiguration-Net issue")
        for button in (self.ui.placeLandmarksButton, self.ui.cancelButton):
            button.enabled = False
            button.toolTip = pending

        self.ui.createEmptyButton.connect("clicked(bool)", self.onCreateEmptyButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # Stop pushing parameter changes into a hidden GUI; enter() reconnects.
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputSegmentation:
            self._parameterNode.inputSegmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")

    def setParameterNode(self, parameterNode: SternumLandmarksParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Binds every widget whose SlicerParameterName property names a parameter (see the .ui file).
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onCreateEmptyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to create the landmark set."), waitCursor=True):
            landmarksNode = self.logic.createEmptyLandmarks(self._parameterNode.protocolFile)
            self.showLandmarks(landmarksNode)
            self.ui.statusLabel.text = _("Created {count} unplaced landmarks in '{name}'.").format(
                count=landmarksNode.GetNumberOfControlPoints(), name=landmarksNode.GetName()
            )

    def showLandmarks(self, landmarksNode: vtkMRMLMarkupsFiducialNode) -> None:
        """One table row per control point: label, description, placed or not."""
        table = self.ui.landmarksTableWidget
        table.setRowCount(landmarksNode.GetNumberOfControlPoints())
        for index in range(landmarksNode.GetNumberOfControlPoints()):
            placed = landmarksNode.GetNthControlPointPositionStatus(index) == landmarksNode.PositionDefined
            cells = (
                landmarksNode.GetNthControlPointLabel(index),
                landmarksNode.GetNthControlPointDescription(index),
                _("placed") if placed else _("not placed"),
            )
            for column, text in enumerate(cells):
                table.setItem(index, column, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()


#
# SternumLandmarksLogic
#


class SternumLandmarksLogic(ScriptedLoadableModuleLogic):
    """Slicer-side entry point; the work itself lives in the Lib packages and needs no GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> SternumLandmarksParameterNode:
        return SternumLandmarksParameterNode(super().getParameterNode())

    def createEmptyLandmarks(self, protocolFile: Path | None = None) -> vtkMRMLMarkupsFiducialNode:
        """A new point list holding every landmark of the protocol, named, unplaced and unlocked.

        An empty ``protocolFile`` (None, or the empty path an untouched path field gives) selects the
        built-in 34-point sternum protocol.
        """
        from SternumLandmarksLib.markups import create_landmarks_node
        from SternumSSMLib.anatomy import load_protocol

        if protocolFile is not None and str(protocolFile) in ("", "."):
            protocolFile = None
        return create_landmarks_node(slicer.mrmlScene, load_protocol(protocolFile))


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

    def test_CreateEmptyLandmarks(self) -> None:
        self.delayDisplay("Empty landmark set")
        landmarksNode = SternumLandmarksLogic().createEmptyLandmarks()

        self.assertEqual(landmarksNode.GetNumberOfControlPoints(), 34)
        for index in range(34):
            self.assertEqual(landmarksNode.GetNthControlPointLabel(index), f"L{index + 1:02d}")
            # Unplaced: the point exists with its name but has no position yet.
            self.assertNotEqual(landmarksNode.GetNthControlPointPositionStatus(index), landmarksNode.PositionDefined)
            self.assertFalse(landmarksNode.GetNthControlPointLocked(index))
