"""SternumShapeModel: build a statistical shape model of the sternum from a dataset, and explore and export it.

This file is the Slicer glue only: module description, typed parameters, widget, a thin logic
and the self-test. The workflow is ``SternumShapeModelLib.shape_panel.ShapePanel`` (Qt-free);
the widget forwards Qt signals to it and draws its state. The library packages are imported
where they are used, so the module loads whatever order Slicer reads the module folders in.
"""

from pathlib import Path

import qt
import slicer
import vtk
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
# SternumShapeModel
#


class SternumShapeModel(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Sternum Shape Model")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # The anatomy, landmarks and dataset layout live in the other two modules' libraries.
        self.parent.dependencies = ["SternumSSM", "SternumLandmarks"]
        self.parent.contributors = ["SternumSSM contributors"]
        self.parent.helpText = _(
            "Builds a statistical shape model of the sternum (manubrium and body) from the corrected cases of a"
            " dataset folder: surfaces, a template warped onto every case with a thin-plate spline on the 34"
            " landmarks plus pseudo-landmarks and projected onto each surface, GPA (size kept) and PCA. The build"
            " runs in the background. Sliders deform the mean shape along the first modes; a training case can be"
            " shown coloured by its fit error; the shape shown can be exported for FE models (LS-DYNA keyword"
            " with the template's node and element ids, or any meshio format). The user guide is in the"
            ' <a href="https://github.com/sternum-ssm/SlicerSternumSSM#readme">README</a>.'
        )
        self.parent.acknowledgementText = _(
            "The recipe (landmarks, template morphing, GPA, PCA, regression on covariates) follows the Chalmers"
            " crash-safety group's shape models; the quality measures follow Davies (2002) and Styner (2003)."
        )


#
# SternumShapeModelParameterNode
#


@parameterNodeWrapper
class SternumShapeModelParameterNode:
    """What the user chose; saved with the scene.

    datasetFolder - dataset folder with the corrected cases (nnU-Net raw layout and manifest).
    outputFolder - a new folder for the model the build writes.
    modelFolder - the model folder shown (set by a build, or chosen to load one).
    exportFile - where Export writes the shape now shown.
    """

    datasetFolder: Path
    outputFolder: Path
    modelFolder: Path
    exportFile: Path


#
# SternumShapeModelWidget
#


class SternumShapeModelWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel's widgets to :class:`ShapePanel`, which holds the workflow."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SternumShapeModelLogic | None = None
        self.panel = None
        self._parameterNode: SternumShapeModelParameterNode | None = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        from SternumShapeModelLib.shape_panel import ShapePanel

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SternumShapeModel.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SternumShapeModelLogic()
        self.panel = ShapePanel(slicer.mrmlScene, on_state=self.drawState, on_error=slicer.util.errorDisplay)
        self.modeSliders = (self.ui.mode1Slider, self.ui.mode2Slider, self.ui.mode3Slider)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # The build runs in a worker process; this timer hands its messages to the panel.
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPollTimer)
        self.ui.buildButton.connect("clicked(bool)", self.onBuildButton)
        self.ui.cancelButton.connect("clicked(bool)", self.panel.cancel)
        self.ui.loadButton.connect("clicked(bool)", self.onLoadButton)
        self.ui.showCaseButton.connect("clicked(bool)", self.onShowCaseButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        for mode, slider in enumerate(self.modeSliders, start=1):
            slider.connect("valueChanged(double)", lambda value, mode=mode: self.panel.set_mode(mode, value))

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.pollTimer.stop()
        self.panel.cleanup()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the Lib packages with this file (Slicer's reload re-reads only the module file)."""
        from SternumSSMLib.module_reload import forget_library_packages

        forget_library_packages()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # Only the GUI is disconnected; a build in progress still finishes and writes its folder.
        self.disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.disconnectParameterNode()
        self._parameterNode = None

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
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self.panel.parameters_changed()

    def drawState(self, state) -> None:
        """Show the panel's :class:`PanelState`."""
        self.ui.buildButton.enabled = state.build_enabled
        self.ui.buildButton.toolTip = state.build_blocker or _("Build the shape model in the background.")
        self.ui.cancelButton.enabled = state.cancel_enabled
        self.ui.progressBar.value = state.progress_percent
        self.ui.statusLabel.text = state.status or state.build_blocker
        for mode, slider in enumerate(self.modeSliders, start=1):
            slider.enabled = mode <= state.mode_count
        if [self.ui.caseComboBox.itemText(i) for i in range(self.ui.caseComboBox.count)] != state.case_ids:
            self.ui.caseComboBox.clear()
            for case_id in state.case_ids:
                self.ui.caseComboBox.addItem(case_id)
        self.ui.showCaseButton.enabled = bool(state.case_ids)
        self.ui.exportButton.enabled = state.export_enabled
        self.ui.summaryTextEdit.plainText = state.summary

    def onBuildButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The shape-model build could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.panel.start_build()
            self.pollTimer.start()

    def onPollTimer(self) -> None:
        if not self.panel.poll():
            self.pollTimer.stop()
            self.resetSliders()

    def onLoadButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the shape model."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.panel.load(self._parameterNode.modelFolder)
            self.resetSliders()

    def resetSliders(self) -> None:
        for slider in self.modeSliders:
            slider.value = 0.0

    def onShowCaseButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the case."), waitCursor=True):
            self.panel.show_case(self.ui.caseComboBox.currentText)

    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            path = self._parameterNode.exportFile
            overwrite = Path(path).exists() and slicer.util.confirmYesNoDisplay(
                _("{file} exists. Replace it?").format(file=Path(path).name)
            )
            written = self.panel.export(path, overwrite=overwrite)
            self.ui.statusLabel.text = _("Written: {path}").format(path=written)


#
# SternumShapeModelLogic
#


class SternumShapeModelLogic(ScriptedLoadableModuleLogic):
    """The parameter node; the workflow itself is ``ShapePanel``, which needs no GUI."""

    def getParameterNode(self) -> SternumShapeModelParameterNode:
        return SternumShapeModelParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        """trimesh, rtree and meshio through pip; asks first, never at import."""
        from SternumSSMLib.dependencies import ensure_in_slicer

        return ensure_in_slicer("shape_model")


#
# SternumShapeModelTest
#


class SternumShapeModelTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test, or ctest); the pytest suite in Testing/ covers the library."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_BuildShowExport()

    def test_BuildShowExport(self) -> None:
        """Four phantoms -> model in memory -> mean shown, mode moved, case coloured, LS-DYNA export."""
        import tempfile

        from SternumShapeModelLib.evaluation import phantom_case, phantom_parameters
        from SternumShapeModelLib.model import BuildSettings, build_model
        from SternumShapeModelLib.shape_panel import ShapePanel
        from SternumShapeModelLib.storage import write_model_folder

        self.delayDisplay("Build a small model from phantoms")
        cases = [phantom_case(p)[0] for p in phantom_parameters(4, 2.0)]
        model = build_model(cases, BuildSettings(template_points=600, quality_modes=2, specificity_samples=10))
        with tempfile.TemporaryDirectory() as folder:
            modelFolder = write_model_folder(model, Path(folder) / "model", with_report=False)
            panel = ShapePanel(slicer.mrmlScene)
            panel.enter(SternumShapeModelLogic().getParameterNode())
            panel.load(modelFolder)
            before = slicer.util.arrayFromModelPoints(panel.mean_node).copy()
            panel.set_mode(1, 2.0)
            self.assertGreater(abs(slicer.util.arrayFromModelPoints(panel.mean_node) - before).max(), 0.5)
            caseNode = panel.show_case(model.cases[0].case_id)
            self.assertTrue(caseNode.GetDisplayNode().GetScalarVisibility())
            written = panel.export(Path(folder) / "shape.k")
            self.assertTrue(written.read_text().startswith("*KEYWORD"))
            panel.cleanup()
        self.delayDisplay("Shape model test passed")
