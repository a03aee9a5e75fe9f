"""The Shape model panel's workflow, Qt-free: build in a worker, show the mean, move modes, inspect cases, export.

The module widget forwards Qt signals here and draws :class:`PanelState`; tests drive this class
(and the widget through the harness) on a real MRML scene.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
from SternumSSMLib.background_run import LIB_PARENT, BackgroundRun

from .mesh_io import write_mesh
from .model import ShapeModel
from .shape_nodes import colour_by, model_node, ras_polydata, set_shape
from .storage import check_new_model_folder, load_model

MEAN_NODE_NAME = "Shape model"
CASE_NODE_NAME = "Shape model case"


@dataclass
class PanelState:
    """What the widget shows."""

    build_enabled: bool = False
    build_blocker: str = ""
    cancel_enabled: bool = False
    progress_percent: int = 0
    status: str = ""
    mode_count: int = 0
    case_ids: list[str] = field(default_factory=list)
    export_enabled: bool = False
    summary: str = ""


class ShapePanel:
    """Holds the loaded model, its nodes and the build worker. ``parameters`` is the module's parameter node."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        on_state: Callable[[PanelState], None] = lambda state: None,
        on_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.scene = scene
        self.on_state = on_state
        self.on_error = on_error
        self.parameters = None
        self.model: ShapeModel | None = None
        self.mean_node = None
        self.case_node = None
        self.scores = np.zeros(0)
        self.run: BackgroundRun | None = None
        self.progress_percent = 0
        self.status = ""

    # -- parameter node and lifetime

    def enter(self, parameters) -> None:
        self.parameters = parameters
        self.publish()

    def parameters_changed(self) -> None:
        self.publish()

    def cleanup(self) -> None:
        if self.run is not None:
            self.run.close()
            self.run = None

    # -- state

    def build_blocker(self) -> str:
        if self.run is not None and self.run.busy:
            return "A build is running."
        p = self.parameters
        if p is None or not _chosen(p.datasetFolder) or not Path(p.datasetFolder).is_dir():
            return "Choose the dataset folder."
        if not _chosen(p.outputFolder):
            return "Choose a new folder for the model."
        try:
            check_new_model_folder(p.outputFolder)
        except (FileExistsError, FileNotFoundError, PermissionError) as error:
            return str(error)
        return ""

    def state(self) -> PanelState:
        blocker = self.build_blocker()
        model = self.model
        return PanelState(
            build_enabled=not blocker,
            build_blocker=blocker,
            cancel_enabled=self.run is not None and self.run.busy,
            progress_percent=self.progress_percent,
            status=self.status,
            mode_count=model.mode_count if model else 0,
            case_ids=[case.case_id for case in model.cases] if model else [],
            export_enabled=model is not None,
            summary=_summary(model) if model else "",
        )

    def publish(self) -> None:
        self.on_state(self.state())

    # -- building in the background

    def start_build(self) -> None:
        blocker = self.build_blocker()
        if blocker:
            raise ValueError(blocker)
        if self.run is None:
            lib_parent = Path(__file__).resolve().parents[1]
            landmarks_parent = _package_parent("SternumLandmarksLib")
            parents = [LIB_PARENT, landmarks_parent, lib_parent]
            self.run = BackgroundRun("SternumShapeModelLib.build_worker", package_parents=parents)
        self.run.send({"dataset": str(self.parameters.datasetFolder), "output": str(self.parameters.outputFolder)})
        self.progress_percent, self.status = 0, "Building the shape model..."
        self.publish()

    def poll(self) -> bool:
        """Handle the worker's messages; False once no build is running (the caller's timer may stop)."""
        if self.run is None:
            return False
        for message in self.run.poll():
            event = message["event"]
            if event == "progress":
                self.progress_percent, self.status = round(100 * message["fraction"]), message["text"]
            elif event == "done":
                self.progress_percent, self.status = 100, f"Built {message['model_folder']}"
                self.parameters.modelFolder = Path(message["model_folder"])
                self.load(message["model_folder"])
            elif event == "error":
                self.status = "Build failed."
                self.on_error(message["message"])
            elif event == "cancelled":
                self.progress_percent, self.status = 0, "Cancelled; no model folder was written."
        self.publish()
        return self.run.busy

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
            self.poll()

    # -- showing a model

    def load(self, folder: Path | str) -> ShapeModel:
        """Load a model folder and show its mean shape (model frame) in the scene."""
        self.model = load_model(folder)
        self.scores = np.zeros(self.model.mode_count)
        if self.mean_node is None or self.scene.GetNodeByID(self.mean_node.GetID()) is None:
            self.mean_node = model_node(self.scene, self.model.shape(), MEAN_NODE_NAME)
        else:
            self.mean_node.SetAndObservePolyData(ras_polydata(self.model.shape()))
        self.publish()
        return self.model

    def set_mode(self, mode: int, standard_deviations: float) -> None:
        """Mode ``mode`` (1-based) at ``standard_deviations`` SD: the shown shape follows at once."""
        if self.model is None or mode > self.model.mode_count:
            return
        self.scores[mode - 1] = self.model.mode_scores(mode, standard_deviations)[mode - 1]
        set_shape(self.mean_node, self.model.points(self.scores))

    def show_case(self, case_id: str):
        """A training case's corresponded mesh, GPA-aligned onto the model, coloured by where its fit misses."""
        case = next(c for c in self.model.cases if c.case_id == case_id)
        aligned = case.points_lps @ case.transform[:3, :3].T + case.transform[:3, 3]
        mesh = self.model.template.mesh.with_points(aligned)
        if self.case_node is None or self.scene.GetNodeByID(self.case_node.GetID()) is None:
            self.case_node = model_node(self.scene, mesh, CASE_NODE_NAME)
        else:
            set_shape(self.case_node, aligned)
        self.case_node.SetName(f"{CASE_NODE_NAME} {case_id}")
        colour_by(self.case_node, case.vertex_error_mm)
        return self.case_node

    def export(self, path: Path | str, overwrite: bool = False) -> Path:
        """Write the shape now shown (model frame, LPS) as a mesh; .k/.key give LS-DYNA with template ids."""
        return write_mesh(self.model.shape(self.scores), path, overwrite=overwrite)


def _chosen(path) -> bool:
    """An empty path parameter reads back as Path("."): that means nothing was chosen."""
    return str(path or "").strip() not in ("", ".")


def _package_parent(package: str) -> Path:
    """The folder holding an importable package (the worker needs it on its path)."""
    return Path(importlib.import_module(package).__file__).resolve().parents[1]


def _summary(model: ShapeModel) -> str:
    k = model.mode_count
    lines = [
        f"{len(model.cases)} cases, {k} modes ({100 * model.compactness[k - 1]:.1f} % of the variance), "
        f"template {model.template.source}",
        f"generalisation with {k} modes: {model.generalisation_mm[min(k, len(model.generalisation_mm)) - 1]:.2f} mm",
    ]
    lines += [f"flagged {case_id}: {flag}" for case_id, flag in model.flagged]
    lines += [f"skipped {case_id}: {reason}" for case_id, reason in model.skipped.items()]
    return "\n".join(lines)
