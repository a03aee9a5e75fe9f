"""SternumSSM: segment the sternum and the costal cartilages in a thorax CT.

This file is the Slicer glue only: module description, typed parameters, widget,
a thin logic and the self-test. Everything that runs without Qt lives in
``SternumSSMLib``, which also holds the one definition of the anatomy (label
values, names, colours, terminology, landmark protocol) that SternumLandmarks
imports too.

How ``SternumSSMLib`` and ``SternumLandmarksLib`` become importable:

- installed extension: every module of the extension is installed into the same
  ``lib/Slicer-X.Y/qt-scripted-modules/`` folder, which Slicer puts on
  ``sys.path``, so both packages import from either module;
- from a checkout: add both module folders, ``SternumSSM/`` and
  ``SternumLandmarks/``, under Application Settings > Modules > Additional module
  paths (or drag the repository onto the Extension Wizard's "Select Extension").
"""

from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# SternumSSM
#


class SternumSSM(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Sternum SSM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SternumSSM contributors"]
        self.parent.helpText = _(
            "Segments the manubrium, sternal body, xiphoid and costal cartilages in a thorax CT with an nnU-Net"
            " model, flags results that need a closer look, and prepares corrected cases as training data."
            " The segmentation always carries the four named segments with fixed label values"
            " (Manubrium 1, Sternal_body 2, Xiphoid 3, Cartilage 4)."
        )
        self.parent.acknowledgementText = _(
            "The workflow follows the Chalmers 2025 study: A. Alexandersson and A. Molnö, <i>Deep Learning for"
            " Segmentation and Landmarking of the Human Anatomy: Applying nnU-Net and SpatialConfiguration-Net to"
            " Automate Statistical Shape Modeling for Sternum and Costal Cartilage</i>, master's thesis, Chalmers"
            " University of Technology, Gothenburg, 2025. Segmentation uses nnU-Net v2 (Isensee et al., 2021)."
        )


#
# SternumSSMParameterNode
#


@parameterNodeWrapper
class SternumSSMParameterNode:
    """What the user chose; saved with the scene.

    inputVolume - thorax CT in Hounsfield units.
    modelFolder - trained nnU-Net model folder.
    preset - "fast": one fold, no mirroring; "accurate": all folds with mirroring.
    device - "auto" picks the GPU when PyTorch sees one.
    roi - limits the run to a box; left empty (None) the whole volume is segmented.
    rerunMode - a CT that already has a predicted segmentation: "update" swaps its standard segments
        and keeps segments the user added; "replace" removes it and makes a new one.
    showUncertainty - compute the per-voxel uncertainty and overlay it on the slice views.
    exportSegmentation, exportLandmarks - the corrected case to add to the training dataset.
    datasetFolder - nnU-Net raw dataset folder; an empty or new folder becomes a new dataset.
    caseId, annotator - recorded with the case; a case id is never a patient identifier.
    exportSplit - "train" (imagesTr/labelsTr) or "test" (held out in imagesTs/labelsTs).
    replaceCase - allow a different CT under an existing case id; the old case is archived.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelFolder: Path
    preset: Annotated[str, Choice(["fast", "accurate"])] = "fast"
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    roi: vtkMRMLMarkupsROINode
    rerunMode: Annotated[str, Choice(["update", "replace"])] = "update"
    showUncertainty: bool = False
    exportSegmentation: vtkMRMLSegmentationNode
    exportLandmarks: vtkMRMLMarkupsFiducialNode
    datasetFolder: Path
    caseId: str = ""
    annotator: str = ""
    exportSplit: Annotated[str, Choice(["train", "test"])] = "train"
    replaceCase: bool = False


#
# SternumSSMWidget
#


class SternumSSMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SternumSSMLogic | None = None
        self._parameterNode: SternumSSMParameterNode | None = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SternumSSM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui forwards mrmlSceneChanged to every node selector, so this one call sets them all.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SternumSSMLogic()

        # Closing the scene deletes the parameter node; drop it first and bind a new one afterwards.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The worker process reports through a queue; this timer drains it on the GUI thread.
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPollWorker)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.cancelButton.enabled = False
        self.ui.showUncertaintyCheckBox.connect("toggled(bool)", self.onShowUncertaintyToggled)

        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.suggestCaseIdButton.connect("clicked(bool)", self.onSuggestCaseId)
        self.ui.datasetSummaryButton.connect("clicked(bool)", self.onDatasetSummary)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.pollTimer.stop()
        self.logic.cancelSegmentation()
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
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = self.logic.firstCtVolume()

    def setParameterNode(self, parameterNode: SternumSSMParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateExportPlan)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Binds every widget whose SlicerParameterName property names a parameter (see the .ui file).
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateExportPlan)
            self.updateExportPlan()

    def onSegmentButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.logic.startSegmentation(self._parameterNode)
            self.ui.qaFlagsListWidget.clear()
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Loading the model and segmenting...")
            self.ui.segmentButton.enabled, self.ui.cancelButton.enabled = False, True
            self.pollTimer.start()

    def onShowUncertaintyToggled(self, checked: bool) -> None:
        if self._parameterNode and self._parameterNode.inputVolume:
            self.logic.setUncertaintyVisible(self._parameterNode.inputVolume, checked)

    def onCancelButton(self) -> None:
        self.logic.cancelSegmentation()
        self.stopPolling(_("Cancelled."))

    def stopPolling(self, status: str) -> None:
        self.pollTimer.stop()
        self.ui.segmentButton.enabled, self.ui.cancelButton.enabled = True, False
        self.ui.statusLabel.text = status

    def onPollWorker(self) -> None:
        for message in self.logic.pollSegmentation():
            event = message["event"]
            if event == "progress":
                self.ui.progressBar.value = int(100 * message["done"] / max(message["total"], 1))
            elif event == "done":
                with slicer.util.tryWithErrorDisplay(_("Cannot show the segmentation."), waitCursor=True):
                    segmentationNode = self.logic.showResult(message, self._parameterNode)
                    for flag in message["flags"]:
                        self.ui.qaFlagsListWidget.addItem(flag["message"])
                    self.stopPolling(_("Done in {seconds:.0f} s.").format(seconds=message["record"]["total_seconds"]))
                    self.logic.openSegmentEditor(segmentationNode, self._parameterNode.inputVolume)
            elif event in ("error", "exit"):
                detail = message.get("message") or "\n".join(message.get("stderr", []))
                self.stopPolling(_("Segmentation failed."))
                slicer.util.errorDisplay(_("Segmentation failed: {detail}").format(detail=detail))

    def updateExportPlan(self, caller=None, event=None) -> None:
        """Say what an export would write, and enable the button only when it can run."""
        node = self._parameterNode
        hasFolder = bool(node) and str(node.datasetFolder or "") not in ("", ".")
        ready = bool(hasFolder and node.inputVolume and node.exportSegmentation and node.caseId)
        self.ui.exportButton.enabled = ready
        if not ready:
            self.ui.exportPlanLabel.text = _(
                "Choose the CT, the corrected segmentation, a dataset folder and a case id."
            )
            return
        self.ui.exportPlanLabel.text = self.logic.describeExport(node.datasetFolder, node.caseId, node.exportSplit)

    def onSuggestCaseId(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot suggest a case id."), waitCursor=True):
            self._parameterNode.caseId = self.logic.suggestCaseId(self._parameterNode.datasetFolder)

    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export to the dataset failed."), waitCursor=True):
            self.ui.exportResultTextEdit.plainText = self.logic.exportToDataset(self._parameterNode)
            self.updateExportPlan()

    def onDatasetSummary(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot summarise the dataset."), waitCursor=True):
            text, plotPath = self.logic.datasetSummary(self._parameterNode.datasetFolder)
            self.ui.exportResultTextEdit.plainText = text
            self.ui.datasetPlotLabel.setPixmap(
                qt.QPixmap(str(plotPath)).scaledToWidth(self.ui.exportResultTextEdit.width)
            )


#
# SternumSSMLogic
#


class SternumSSMLogic(ScriptedLoadableModuleLogic):
    """Slicer-side entry point; the work itself lives in SternumSSMLib and needs no GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.worker = None
        self.workerSettings = None

    def getParameterNode(self) -> SternumSSMParameterNode:
        return SternumSSMParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        """torch through the PyTorch extension, nnunetv2 through pip; asks first, never at import."""
        from SternumSSMLib.dependencies import ensure_packages_in_slicer

        return ensure_packages_in_slicer({"nnunetv2": "nnunetv2==2.8.1"}, _("SternumSSM (nnU-Net segmentation)"))

    def modelFolder(self, parameterNode: SternumSSMParameterNode) -> Path:
        from SternumSSMLib.segmentation_inference import BUNDLED_MODEL

        chosen = str(parameterNode.modelFolder or "")
        return BUNDLED_MODEL if chosen in ("", ".") else Path(chosen)

    def startSegmentation(self, parameterNode: SternumSSMParameterNode) -> None:
        """Write the CT to a temporary NRRD and hand it to the worker, which keeps the model loaded."""
        from SternumSSMLib.case_files import write_volume
        from SternumSSMLib.roi import Box
        from SternumSSMLib.segmentation_worker import SegmentationWorker
        from SternumSSMLib.volume_nodes import volume_from_node

        if not parameterNode.inputVolume:
            raise ValueError(_("Choose the CT volume to segment."))
        settings = (self.modelFolder(parameterNode), parameterNode.preset, parameterNode.device)
        if self.worker is None or settings != self.workerSettings:
            self.cancelSegmentation()
            self.worker, self.workerSettings = SegmentationWorker(*settings), settings
        folder = Path(slicer.util.tempDirectory("SternumSSM"))
        write_volume(volume_from_node(parameterNode.inputVolume), folder / "ct.nrrd")
        roi = None
        if parameterNode.roi:
            bounds = [0.0] * 6
            parameterNode.roi.GetRASBounds(bounds)
            box = Box.from_ras_bounds(bounds)
            roi = [*box.lo_lps.tolist(), *box.hi_lps.tolist()]
        uncertainty = folder / "uncertainty.nrrd" if parameterNode.showUncertainty else None
        self.worker.submit(folder / "ct.nrrd", folder / "labels.nrrd", roi, uncertainty)

    def pollSegmentation(self) -> list:
        return self.worker.poll() if self.worker is not None else []

    def cancelSegmentation(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def showResult(self, message: dict, parameterNode: SternumSSMParameterNode) -> vtkMRMLSegmentationNode:
        """Read the worker's files into this CT's segmentation node (updated or replaced as the user chose)
        and, when computed, its uncertainty volume."""
        import SimpleITK as sitk
        from SternumSSMLib.geometry import Volume
        from SternumSSMLib.prediction_nodes import show_prediction, show_uncertainty, uncertainty_node

        volumeNode = parameterNode.inputVolume
        labels = Volume.from_sitk(sitk.ReadImage(message["output"]))
        existing = None
        for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            if node.GetNodeReference("SternumSSM.SourceVolume") is volumeNode:
                existing = node
        record = message["record"] | {"qa_flags": message["flags"]}
        segmentationNode = show_prediction(
            slicer.mrmlScene, labels, volumeNode, record, existing, mode=parameterNode.rerunMode
        )
        if message.get("uncertainty"):
            show_uncertainty(slicer.mrmlScene, Volume.from_sitk(sitk.ReadImage(message["uncertainty"])), volumeNode)
            self.setUncertaintyVisible(volumeNode, parameterNode.showUncertainty)
        elif uncertainty_node(volumeNode) is not None:
            slicer.mrmlScene.RemoveNode(uncertainty_node(volumeNode))  # it belonged to an earlier prediction
        return segmentationNode

    def setUncertaintyVisible(self, volumeNode: vtkMRMLScalarVolumeNode, visible: bool) -> None:
        """Show the CT's uncertainty volume as the slice views' foreground, or take it out of them."""
        from SternumSSMLib.prediction_nodes import uncertainty_node

        node = uncertainty_node(volumeNode)
        if node is None:
            return
        if visible:
            slicer.util.setSliceViewerLayers(foreground=node, foregroundOpacity=0.4)
            return
        for compositeNode in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            if compositeNode.GetForegroundVolumeID() == node.GetID():
                compositeNode.SetForegroundVolumeID(None)

    def openSegmentEditor(self, segmentationNode: vtkMRMLSegmentationNode, volumeNode: vtkMRMLScalarVolumeNode) -> None:
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)

    def suggestCaseId(self, datasetFolder: Path | None) -> str:
        from SternumSSMLib.dataset import suggest_case_id

        return suggest_case_id(datasetFolder if datasetFolder and str(datasetFolder) != "." else None)

    def describeExport(self, datasetFolder: Path, caseId: str, split: str) -> str:
        from SternumSSMLib.export import describe_export

        return describe_export(datasetFolder, caseId, split)

    def exportToDataset(self, parameterNode: SternumSSMParameterNode) -> str:
        """Export the chosen CT, corrected segmentation and landmarks; returns the summary with correction effort."""
        from SternumSSMLib.export import export_from_scene

        if not parameterNode.inputVolume or not parameterNode.exportSegmentation:
            raise ValueError(_("Choose the CT volume and the corrected segmentation."))
        result = export_from_scene(
            parameterNode.inputVolume,
            parameterNode.exportSegmentation,
            parameterNode.datasetFolder,
            parameterNode.caseId,
            annotator=parameterNode.annotator,
            landmarks_node=parameterNode.exportLandmarks,
            split=parameterNode.exportSplit,
            replace=parameterNode.replaceCase,
        )
        return result.summary()

    def datasetSummary(self, datasetFolder: Path) -> tuple[str, Path]:
        """The summary text and a PNG of correction effort per round (in Slicer's temporary folder)."""
        from SternumSSMLib.dataset_summary import dataset_summary, plot_summary, summary_text

        summary = dataset_summary(datasetFolder)
        plotPath = plot_summary(summary, Path(slicer.app.temporaryPath) / "SternumSSM-dataset-summary.png")
        return summary_text(summary), plotPath

    def firstCtVolume(self) -> vtkMRMLScalarVolumeNode | None:
        """The first scalar volume in the scene that is not a label map, to save the user a click."""
        for volumeNode in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if not volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                return volumeNode
        return None


#
# SternumSSMTest
#


class SternumSSMTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test, or ctest); the pytest suite in Testing/ covers the library."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_LabelScheme()
        self.setUp()
        self.test_ParameterDefaults()

    def test_LabelScheme(self) -> None:
        self.delayDisplay("Label scheme")
        from SternumSSMLib.anatomy import label_scheme

        scheme = label_scheme()
        self.assertEqual(scheme.names, ("Manubrium", "Sternal_body", "Xiphoid", "Cartilage"))
        self.assertEqual(scheme.values, (1, 2, 3, 4))
        self.assertEqual(scheme.background_value, 0)

    def test_ParameterDefaults(self) -> None:
        self.delayDisplay("Parameter defaults")
        parameterNode = SternumSSMLogic().getParameterNode()
        self.assertEqual(parameterNode.preset, "fast")
        self.assertEqual(parameterNode.device, "auto")
        self.assertEqual(parameterNode.rerunMode, "update")
        self.assertFalse(parameterNode.showUncertainty)
        self.assertIsNone(parameterNode.roi)
