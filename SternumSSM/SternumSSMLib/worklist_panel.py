"""The SternumSSM panel's Worklist section, without Qt: the ranked cases of a batch output folder, **Next case**
and the claim that stops two annotators from opening the same case.

The ranking, the claims and the case files are :mod:`SternumSSMLib.worklist`'s; this class puts a claimed case
into the scene as if the module had predicted it there:

- the CT, read with the readers every command uses (its voxels, and so its image hash, are the batch's), with
  its source record (the file's content hash) for the export;
- ``<case>.seg.nrrd`` as the CT's prediction (``prediction_nodes.show_prediction`` with the batch's record), so
  the export measures the correction against it and records the model, preset and time of the prediction;
- ``<case>.mrk.json`` as the protocol's landmark list with a hidden unedited copy, linked to the segmentation
  for the SternumLandmarks module, with the batch's per-landmark confidence.

It fills the export's inputs (CT, segmentation, landmarks, case id = the batch's case id); after the export the
claim is released, and the case leaves the list because the dataset now holds it. **Give case back** releases
the claim without an export: the case returns to the list for the others, and its nodes stay in the scene; when
Next case brings that case back to this scene, it opens those nodes (with any edits) instead of loading it twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import slicer

from .anatomy import default_protocol
from .image_files import read_ct_with_source, read_labels
from .markups import create_landmarks_node, keep_unedited_copy, read_landmarks_markups, set_landmark_positions
from .prediction_nodes import show_prediction
from .scene_contract import CONFIDENCE_ATTRIBUTE, SOURCE_RECORD_ATTRIBUTE, SOURCE_SEGMENTATION_REFERENCE
from .segmentation_panel import present_prediction
from .volume_nodes import volume_node_from_volume
from .worklist import STALE_AFTER_S, TIER_NAMES, Claim, WorklistEntry, case_files, claim_next, rank_cases, release


def chosen_folder(path: Path | str | None) -> Path | None:
    """A folder parameter as the user left it: None when the field is empty."""
    return None if str(path or "") in ("", ".") else Path(path)


def entry_text(entry: WorklistEntry) -> str:
    """One row of the list: rank, case, tier, score, who has it, and why it needs an annotator."""
    holder = f", claimed by {entry.claimed_by}" if entry.claimed_by else ""
    head = f"{entry.rank}. {entry.case_id} ({TIER_NAMES[entry.tier]}, score {entry.score:.2f}{holder})"
    return f"{head}: {'; '.join(entry.reasons)}"


@dataclass(frozen=True)
class OpenCase:
    """A claimed case in the scene: the claim to release, and the nodes it was loaded into."""

    batch: Path
    claim: Claim
    volume_node: slicer.vtkMRMLScalarVolumeNode
    segmentation_node: slicer.vtkMRMLSegmentationNode
    landmarks_node: slicer.vtkMRMLMarkupsFiducialNode


class WorklistPanel:
    """The ranked cases of the chosen batch folder, and the cases this Slicer session claimed and opened."""

    def __init__(self, scene: slicer.vtkMRMLScene, stale_after_s: float = STALE_AFTER_S) -> None:
        self.scene = scene
        self.stale_after_s = stale_after_s
        self.entries: list[WorklistEntry] = []
        self.open_cases: list[OpenCase] = []
        self.given_back: list[OpenCase] = []  # released cases whose nodes stayed in the scene
        self._ranked_for: tuple | None = None  # (batch, dataset) the entries were ranked for
        self.notice = ""  # what the last Give case back did, for the status line until the next case opens

    def readiness(self, parameters) -> tuple[bool, str]:
        """Whether Next case can run with these parameters (``batchFolder``, ``datasetFolder``, ``annotator``),
        and the sentence that says why (not)."""
        batch = chosen_folder(parameters.batchFolder)
        if batch is None or not batch.is_dir():
            return False, "Choose the output folder of a batch (sternum-ssm batch)."
        try:
            entries = self.ranked(parameters)
        except (OSError, ValueError, KeyError) as error:  # a record or claim file someone broke
            return False, f"Cannot rank the cases of {batch}: {type(error).__name__}: {error}"
        if not parameters.annotator.strip():
            return False, "Enter your name as Annotator (Export section): a claim tells the others who has the case."
        # In claim_next's order: the annotator's own open case first, then the unclaimed ones by rank.
        waiting = [e for e in entries if e.claimed_by == parameters.annotator] + [
            e for e in entries if e.claimed_by is None
        ]
        if not waiting:
            return False, f"No case is waiting in {batch}: every predicted case is exported or claimed."
        return True, f"{len(waiting)} case(s) waiting; Next case opens {waiting[0].case_id}."

    def ranked(self, parameters, refresh: bool = False) -> list[WorklistEntry]:
        """The worklist of the chosen folders, ranked again when they changed or on ``refresh``."""
        batch, dataset = chosen_folder(parameters.batchFolder), chosen_folder(parameters.datasetFolder)
        if batch is None or not batch.is_dir():
            self.entries, self._ranked_for = [], None
        elif refresh or self._ranked_for != (batch, dataset):
            self.entries, self._ranked_for = [], None  # a ranking that fails leaves no stale list behind
            self.entries, self._ranked_for = rank_cases(batch, dataset, self.stale_after_s), (batch, dataset)
        return self.entries

    def next_case(self, parameters) -> OpenCase | None:
        """Claim the annotator's next case, load it into the scene and make it the panel's export; None when no
        case is waiting. A case that cannot be loaded is given back before the error goes up."""
        batch, dataset = chosen_folder(parameters.batchFolder), chosen_folder(parameters.datasetFolder)
        if batch is None:
            raise ValueError("Choose the output folder of a batch first.")
        self.notice = ""
        claim = claim_next(batch, dataset, parameters.annotator, self.stale_after_s)
        if claim is None:
            self.ranked(parameters, refresh=True)
            return None
        already = self._open_case(claim.case_id)
        if already is not None:  # open or given back in this scene, claimed again: show it, do not load it twice
            opened = replace(already, claim=claim)
            for cases in (self.open_cases, self.given_back):
                if already in cases:
                    cases.remove(already)
        else:
            try:
                opened = self._load(batch, claim)
            except Exception:
                release(batch, claim)
                raise
        self.open_cases.append(opened)
        parameters.inputVolume = opened.volume_node
        parameters.exportSegmentation = opened.segmentation_node
        parameters.exportLandmarks = opened.landmarks_node
        parameters.caseId = claim.case_id
        self.ranked(parameters, refresh=True)
        return opened

    def _open_case(self, case_id: str) -> OpenCase | None:
        """The case opened (or given back) earlier in this scene, while its nodes are still there."""
        nodes = ("volume_node", "segmentation_node", "landmarks_node")
        return next(
            (
                case for case in self.open_cases + self.given_back
                if case.claim.case_id == case_id and all(self.scene.IsNodePresent(getattr(case, n)) for n in nodes)
            ),
            None,
        )  # fmt: skip

    def _load(self, batch: Path, claim: Claim) -> OpenCase:
        files = case_files(batch, claim.case_id)
        record = json.loads(files["record"].read_text())
        confidence = json.dumps(record["landmarks"]["confidence"])  # everything is read before a node is added
        ct, source = read_ct_with_source(files["ct"], files["series_uid"])
        labels = read_labels(files["segmentation"], grid=ct.geometry)
        points = read_landmarks_markups(files["markups"], "LPS")
        volume_node = volume_node_from_volume(self.scene, ct, claim.case_id)
        volume_node.SetAttribute(SOURCE_RECORD_ATTRIBUTE, json.dumps(source))  # the export records the file's hash
        segmentation_node = show_prediction(self.scene, labels, volume_node, record)
        protocol = default_protocol()
        landmarks_node = create_landmarks_node(self.scene, protocol, name=f"{claim.case_id} landmarks")
        set_landmark_positions(landmarks_node, points)
        keep_unedited_copy(self.scene, landmarks_node, points, protocol)
        landmarks_node.SetNodeReferenceID(SOURCE_SEGMENTATION_REFERENCE, segmentation_node.GetID())
        landmarks_node.SetAttribute(CONFIDENCE_ATTRIBUTE, confidence)
        present_prediction(self.scene, segmentation_node)
        return OpenCase(batch, claim, volume_node, segmentation_node, landmarks_node)

    def exported(self, volume_node: slicer.vtkMRMLScalarVolumeNode, parameters) -> str:
        """After the export of ``volume_node``: release the claim of the case it was opened from, if it was one.
        Returns a line for the export summary (empty for a CT that did not come from the worklist)."""
        opened = next((case for case in self.open_cases if case.volume_node is volume_node), None)
        if opened is None:
            return ""
        if self._release(opened, parameters):
            return f"Worklist: case {opened.claim.case_id} is done; its claim is released."
        return f"Worklist: the claim on {opened.claim.case_id} had expired and was taken over; it is left as it is."

    def held_case(self, parameters) -> OpenCase | None:
        """The case this scene opened for the annotator and she has neither exported nor given back (the one
        shown in the export first); None when she holds none."""
        held = [case for case in self.open_cases if case.claim.annotator == parameters.annotator]
        shown = [case for case in held if case.volume_node is parameters.inputVolume]
        return (shown or held or [None])[-1]

    def give_back(self, parameters) -> str:
        """Release the annotator's claim on her open case, so the case is on the list again for the others.
        Its nodes stay in the scene: they may hold her edits. Returns the sentence for the status line."""
        opened = self.held_case(parameters)
        if opened is None:
            raise ValueError(f"{parameters.annotator or 'You'} holds no case opened with Next case in this scene.")
        case_id = opened.claim.case_id
        self.given_back.append(opened)
        if self._release(opened, parameters):
            self.notice = f"Case {case_id} is given back for the others to take; its nodes stay in the scene."
        else:
            self.notice = f"The claim on {case_id} had expired and was taken over; it is left as it is."
        return self.notice

    def _release(self, opened: OpenCase, parameters) -> bool:
        """Forget the open case and release its claim; False when the claim was taken over meanwhile."""
        self.open_cases.remove(opened)
        released = release(opened.batch, opened.claim)
        self.ranked(parameters, refresh=True)
        return released
