"""The pictures of the README's annotator's guide: one phantom case from segmentation to export.

Five steps, one PNG each, drawn with the project's headless renderer (:func:`SternumSSMLib.render.render_case`):

1. ``1_segment.png``: the nnU-Net prediction with the QA flags it raised;
2. ``2_correct.png``: the corrected segmentation (here the phantom's truth stands in for the
   annotator's correction), changed voxels highlighted and counted per class;
3. ``3_place_landmarks.png``: the landmark model's points on the corrected labels, low confidence marked;
4. ``4_drag.png``: one landmark dragged off the bone, the live-QA flag it raises, and the point
   snapped back to the surface;
5. ``5_export.png``: the export's summary (with the correction effort) and the dataset folder it wrote.

The steps' logic (:func:`correction_step`, :func:`drag_step`, :func:`export_step`) is separate
from the drawing so that it can be tested without a model or a picture::

    .venv/bin/python tools/annotator_guide.py --output Resources/Guide [--landmark-model DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from SternumLandmarksLib.landmark_qa import LandmarkQA, LandmarkQAContext, snap_to_surface
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import PointSet, Volume
from SternumSSMLib.phantom import Phantom, generate_phantom, random_parameters

PICTURES = ("1_segment.png", "2_correct.png", "3_place_landmarks.png", "4_drag.png", "5_export.png")
PHANTOM_SEED = 5004
PHANTOM_SPACING_MM = 2.0
# Intercostal margins: mid-body on the lateral rim, where a drag outwards is easy to see from the front.
DRAG_LANDMARKS = ("L25", "L09", "L27", "L11", "L23", "L07", "L29", "L13", "L21")
DRAG_MM = 8.0
CASE_ID = "guide_0001"
DATASET_NAME = "Dataset900_Sternum"
# Keeps the pictures small enough for the repository: about 900 px wide, 256 colours.
RENDER_DPI = 70
TEXT_DPI = 80
CAPTION_WIDTH = 118


# ---------------------------------------------------------------------------
# Step 2: what the correction changed
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectionStep:
    """Voxels whose label the correction changed, and per class how many entered (painted) or left it (erased)."""

    changed: np.ndarray  # bool [k, j, i]
    painted: dict[str, int]
    erased: dict[str, int]
    missed: tuple[str, ...] = ()  # classes absent from the prediction that the correction painted

    @property
    def changed_total(self) -> int:
        return int(self.changed.sum())

    def lines(self, voxel_ml: float) -> list[str]:
        if not self.changed_total:
            return ["The correction changed no voxels."]
        lines = [f"The correction changed {self.changed_total} voxels ({self.changed_total * voxel_ml:.2f} ml):"]
        for name in self.painted:
            if self.painted[name] or self.erased[name]:
                missed = " (missed by the model, painted in full)" if name in self.missed else ""
                lines.append(f"  {name}: {self.painted[name]} painted, {self.erased[name]} erased{missed}")
        return lines


def correction_step(predicted: Volume, corrected: Volume) -> CorrectionStep:
    """Compare the prediction with the correction voxel by voxel (both on one grid)."""
    if not predicted.geometry.same_grid(corrected.geometry):
        raise ValueError("The prediction and the correction must be on one voxel grid.")
    before, after = predicted.array, corrected.array
    painted, erased, missed = {}, {}, []
    for segment_class in label_scheme().classes:
        was, now = before == segment_class.value, after == segment_class.value
        painted[segment_class.name] = int(np.count_nonzero(now & ~was))
        erased[segment_class.name] = int(np.count_nonzero(was & ~now))
        if now.any() and not was.any():
            missed.append(segment_class.name)
    return CorrectionStep(changed=before != after, painted=painted, erased=erased, missed=tuple(missed))


def focus_of_changes(step: CorrectionStep, corrected: Volume, predicted: Volume) -> np.ndarray | None:
    """An LPS point (where the slices should pass) in the middle of the changes to the class that changed
    most for its size: changed voxels over voxels in the class before or after. None without changes."""
    if not step.changed_total:
        return None
    scheme = label_scheme()
    share = {}
    for name in step.painted:
        value = scheme.by_name(name).value
        either = int(np.count_nonzero((corrected.array == value) | (predicted.array == value)))
        share[name] = (step.painted[name] + step.erased[name]) / either if either else 0.0
    value = scheme.by_name(max(share, key=share.get)).value
    voxels = np.argwhere(step.changed & ((corrected.array == value) | (predicted.array == value)))
    middle = voxels[np.argmin(np.linalg.norm(voxels - np.median(voxels, axis=0), axis=1))]
    return corrected.geometry.index_to_lps(middle[::-1].astype(float).reshape(1, 3))[0]


# ---------------------------------------------------------------------------
# Step 4: drag a landmark off the bone, see the live QA, snap it back
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DragStep:
    landmark_id: str
    original_lps: np.ndarray
    dragged_lps: np.ndarray
    snapped_lps: np.ndarray
    dragged_points: PointSet  # all points, the landmark where the drag left it
    snapped_points: PointSet  # all points, the landmark snapped back
    while_dragged: LandmarkQA  # the landmark's live QA at the dragged position
    after_snap: LandmarkQA

    def lines(self) -> list[str]:
        moved = float(np.linalg.norm(self.dragged_lps - self.original_lps))
        back = float(np.linalg.norm(self.snapped_lps - self.dragged_lps))
        lines = [f"Live QA while {self.landmark_id} is dragged {moved:.1f} mm off the rim:"]
        lines += [f"  [{flag.code}] {flag.message}" for flag in self.while_dragged.flags] or ["  no flags"]
        lines.append(f"Dropped with 'Snap to surface on drop': moved {back:.1f} mm onto the surface "
                     f"({abs(self.after_snap.signed_distance_mm):.1f} mm from it); live QA:")
        lines += [f"  [{flag.code}] {flag.message}" for flag in self.after_snap.flags] or [
            f"  {self.landmark_id}: no flags"
        ]
        return lines


def outward_direction(context: LandmarkQAContext, point_lps: np.ndarray) -> np.ndarray:
    """Unit LPS vector at ``point_lps`` pointing away from the bone within the sternum's frontal plane:
    the outline's outward normal at the nearest outline point."""
    outline = context.outline
    along, _ = outline.locate(point_lps.reshape(1, 3))
    tangent = outline.tangents_at(along)[0]
    normal = np.cross(tangent, outline.frame_lps[2])
    normal /= np.linalg.norm(normal)
    rim = outline.points_at(along)[0]
    return normal if np.dot(rim - outline.centre_lps, normal) >= 0 else -normal


def drag_step(
    points: PointSet, context: LandmarkQAContext, landmark_id: str = DRAG_LANDMARKS[0], distance_mm: float = DRAG_MM
) -> DragStep:
    """Drag ``landmark_id`` ``distance_mm`` outwards off the rim, QA it there, snap it back and QA it again."""
    lps = points.to("LPS")
    if landmark_id not in lps.names:
        raise ValueError(f"No landmark {landmark_id!r} among the points.")
    row = lps.names.index(landmark_id)
    original = lps.positions[row].copy()
    if not np.all(np.isfinite(original)):
        raise ValueError(f"{landmark_id} is not placed; choose a placed landmark to drag.")
    dragged = original + distance_mm * outward_direction(context, original)
    snapped = snap_to_surface(dragged, context, coordinate_system="LPS")
    dragged_points, snapped_points = _moved(lps, row, dragged), _moved(lps, row, snapped)
    return DragStep(
        landmark_id=landmark_id,
        original_lps=original,
        dragged_lps=dragged,
        snapped_lps=snapped,
        dragged_points=dragged_points,
        snapped_points=snapped_points,
        while_dragged=context.evaluate(dragged_points)[landmark_id],
        after_snap=context.evaluate(snapped_points)[landmark_id],
    )


def _moved(points: PointSet, row: int, position: np.ndarray) -> PointSet:
    positions = points.positions.copy()
    positions[row] = position
    return PointSet(names=points.names, positions=positions, coordinate_system="LPS",
                    descriptions=points.descriptions)


def drag_candidates(
    points: PointSet,
    context: LandmarkQAContext,
    confident: np.ndarray | None = None,
    preferred: Sequence[str] = DRAG_LANDMARKS,
) -> list[str]:
    """Landmarks worth dragging for the picture, best first: placed, confident (when known) and without QA
    flags before the drag; those in ``preferred`` first, in its order, then the others by how sideways
    their drag goes (a lateral drag reads best from the front)."""
    lps = points.to("LPS")
    usable = lps.defined.copy()
    if confident is not None:
        usable &= np.asarray(confident, bool)
    report = context.evaluate(lps)
    usable &= np.array([not landmark.flagged for landmark in report.landmarks])
    rows = [int(n) for n in np.flatnonzero(usable)]
    sideways = {n: abs(outward_direction(context, lps.positions[n]) @ context.outline.frame_lps[0]) for n in rows}
    rank = {name: k for k, name in enumerate(preferred)}
    rows.sort(key=lambda n: (rank.get(lps.names[n], len(rank)), -round(sideways[n], 1), n))
    return [lps.names[n] for n in rows]


def choose_drag(
    points: PointSet,
    context: LandmarkQAContext,
    confident: np.ndarray | None = None,
    preferred: Sequence[str] = DRAG_LANDMARKS,
    distance_mm: float = DRAG_MM,
) -> DragStep:
    """The first candidate's drag that shows the point of the step: flagged while dragged, clean once snapped.

    Falls back to the first placed landmark's drag when no candidate does.
    """
    candidates = drag_candidates(points, context, confident, preferred)
    for landmark_id in candidates:
        step = drag_step(points, context, landmark_id, distance_mm)
        if step.while_dragged.flagged and not step.after_snap.flagged:
            return step
    placed = [name for name, ok in zip(points.names, points.defined, strict=True) if ok]
    if not candidates and not placed:
        raise ValueError("No landmark is placed, so there is none to drag.")
    return drag_step(points, context, (candidates or placed)[0], distance_mm)


# ---------------------------------------------------------------------------
# Step 5: export into a dataset
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportStep:
    summary: str  # ExportResult.summary(), with the temporary folder's path left out
    tree: list[str]
    record: dict


def export_step(
    dataset_folder: Path | str, image: Volume, labels: Volume, landmarks: PointSet, prediction
) -> ExportStep:
    """Export the corrected case into ``dataset_folder`` (a new dataset there) and describe the result.

    ``prediction`` is a :class:`SternumSSMLib.export.Prediction`; with its labels and landmarks
    the manifest records the correction effort.
    """
    from SternumSSMLib.export import export_case

    dataset_folder = Path(dataset_folder)
    result = export_case(dataset_folder, CASE_ID, image, labels, landmarks, annotator="guide", prediction=prediction)
    summary = result.summary().replace(str(result.dataset_folder.parent) + os.sep, "")
    return ExportStep(summary=summary, tree=dataset_tree(result.dataset_folder), record=result.record)


def dataset_tree(folder: Path | str) -> list[str]:
    """The folder's files as an indented tree (folders first, by name; hidden entries left out)."""
    folder = Path(folder)
    lines = [f"{folder.name}/"]

    def walk(path: Path, depth: int) -> None:
        entries = sorted((e for e in path.iterdir() if not e.name.startswith(".")), key=lambda e: (e.is_file(), e.name))
        for entry in entries:
            lines.append("    " * depth + entry.name + ("/" if entry.is_dir() else ""))
            if entry.is_dir():
                walk(entry, depth + 1)

    walk(folder, 1)
    return lines


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------


def qa_flag_lines(flags: Sequence) -> list[str]:
    """Segmentation QA flags (``SternumSSMLib.qa.QAFlag``) as caption lines."""
    if not flags:
        return ["QA: no flags; the segmentation looks plausible."]
    return [f"QA flags ({len(flags)}), shown in the module under the result:"] + [
        f"  [{flag.severity}] {flag.message}" for flag in flags
    ]


def landmark_lines(prediction, qa_summary: str | None = None, limit: int = 6) -> list[str]:
    """Caption lines for a landmark prediction: counts, then its flags (at most ``limit``), then the QA line."""
    placed, confident = np.asarray(prediction.placed, bool), np.asarray(prediction.confident, bool)
    low = int((placed & ~confident).sum())
    lines = [
        f"{int(placed.sum())} of {len(placed)} landmarks placed; {low} low confidence (orange, '?'), "
        f"{len(prediction.duplicates)} duplicate pair(s). The confidence table lists them first:"
    ]
    flags = prediction.flags()
    lines += [f"  {message}" for message in flags[:limit]]
    if len(flags) > limit:
        lines.append(f"  ... and {len(flags) - limit} more in the table")
    if qa_summary:
        lines.append(f"Landmark QA: {qa_summary}")
    return lines


def _caption(lines: Sequence[str], width: int = CAPTION_WIDTH) -> str:
    wrapped = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        wrapped += textwrap.wrap(line, width, subsequent_indent=indent) or [""]
    return "\n".join(wrapped)


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------


def make_guide_pictures(
    output_folder: Path | str,
    segmentation_model_folder: Path | str | None = None,
    landmark_model_folder: Path | str | None = None,
    *,
    phantom: Phantom | None = None,
    segment: Callable[[Volume], object] | None = None,
    place_landmarks: Callable[[Volume], object] | None = None,
    render_spacing_mm: float = 1.0,
) -> list[Path]:
    """Render the guide's five pictures into ``output_folder`` and return their paths.

    Models default to the bundled ones. ``phantom``, ``segment`` (image -> an object with
    ``labels``, ``flags`` and ``record``, like :func:`SternumSSMLib.segment.segment_ct`'s outcome)
    and ``place_landmarks`` (labels -> a :class:`LandmarkPrediction`) replace the phantom and the
    models, e.g. in tests.
    """
    from SternumSSMLib.export import Prediction
    from SternumSSMLib.render import render_case

    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    phantom = phantom or generate_phantom(random_parameters(PHANTOM_SEED, spacing=(PHANTOM_SPACING_MM,) * 3))
    if segment is None:
        from SternumSSMLib.segment import segment_ct
        from SternumSSMLib.segmentation_inference import SegmentationModel

        segmentation_model = SegmentationModel(segmentation_model_folder)
        segment = lambda image: segment_ct(segmentation_model, image)  # noqa: E731
    if place_landmarks is None:
        from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel

        landmark_model = LandmarkModel(landmark_model_folder or BUNDLED_LANDMARK_MODEL)
        place_landmarks = lambda labels: landmark_model.predict(labels, phantom.image)  # noqa: E731

    image, corrected = phantom.image, phantom.labels
    voxel_ml = float(np.prod(image.geometry.spacing)) / 1000.0
    paths = [output / name for name in PICTURES]
    style = {"spacing_mm": render_spacing_mm, "dpi": RENDER_DPI}

    # 1. Segment
    outcome = segment(image)
    render_case(image, outcome.labels, None, paths[0], caption=_caption(qa_flag_lines(outcome.flags)),
                title="1. Segment: the model's prediction (SternumSSM module, 'Segment')", **style)

    # 2. Correct
    correction = correction_step(outcome.labels, corrected)
    render_case(
        image, corrected, None, paths[1],
        title="2. Correct in the Segment Editor: changed voxels in magenta",
        caption=_caption(correction.lines(voxel_ml)),
        highlight=Volume(correction.changed.astype(np.uint8), corrected.geometry),
        focus_lps=focus_of_changes(correction, corrected, outcome.labels),
        **style,
    )

    # 3. Place landmarks
    prediction = place_landmarks(corrected)
    points = prediction.points("LPS")
    context = LandmarkQAContext.from_labels(corrected)
    low_confidence = np.asarray(prediction.placed, bool) & ~np.asarray(prediction.confident, bool)
    render_case(
        image, corrected, points, paths[2],
        title="3. Place landmarks (SternumLandmarks module): numbered, low confidence marked '?'",
        caption=_caption(landmark_lines(prediction, context.evaluate(points).summary)),
        low_confidence=low_confidence,
        **style,
    )

    # 4. Drag, live QA, snap
    drag = choose_drag(points, context, prediction.confident)
    row = points.names.index(drag.landmark_id)
    others = drag.snapped_points.positions.copy()
    others[row] = np.nan  # the dragged landmark is drawn by the markers
    render_case(
        image, corrected, PointSet(names=points.names, positions=others, coordinate_system="LPS"), paths[3],
        title=f"4. Drag {drag.landmark_id} off the bone: live QA flags it; 'Snap to surface on drop' puts it back",
        caption=_caption(drag.lines()),
        low_confidence=low_confidence,
        markers=[
            (drag.dragged_lps, f"{drag.landmark_id} dragged", "yellow"),
            (drag.snapped_lps, f"{drag.landmark_id} snapped", "cyan"),
        ],
        focus_lps=drag.snapped_lps,
        **style,
    )

    # 5. Export
    with tempfile.TemporaryDirectory(prefix="sternum-guide-") as temporary:
        predicted = Prediction(
            labels=outcome.labels,
            landmarks=points,
            predicted_at=outcome.record.get("predicted_at"),
            qa_flags=[asdict(flag) for flag in outcome.flags],
        )
        exported = export_step(Path(temporary) / DATASET_NAME, image, corrected, drag.snapped_points, predicted)
    render_text_picture(
        paths[4],
        "5. Export to dataset: files, manifest record and correction effort",
        [("ExportResult.summary()", exported.summary.splitlines()), ("The dataset folder", exported.tree)],
    )
    for path in paths:
        shrink_png(path)
    return paths


def render_text_picture(output: Path | str, title: str, blocks: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """A black picture with a title and monospace text blocks side by side (about 900 px wide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from SternumSSMLib.atomic import atomic_output_path

    wrapped = [[w for line in lines for w in (_caption([line], 64).splitlines() or [""])] for _, lines in blocks]
    rows = max(len(lines) for lines in wrapped)
    height = 1.0 + 0.2 * (rows + 2)
    fig = plt.figure(figsize=(11.25, height))
    fig.patch.set_facecolor("black")
    fig.text(0.02, 1 - 0.3 / height, title, color="white", fontsize=13, va="top")
    # The first block (the summary) gets the wider column.
    columns = [0.02, 0.6] if len(blocks) == 2 else np.linspace(0.02, 1, len(blocks) + 1)[:-1]
    for (heading, _), lines, x in zip(blocks, wrapped, columns, strict=True):
        fig.text(x, 1 - 0.75 / height, heading, color="orange", fontsize=11, va="top")
        fig.text(x, 1 - 1.05 / height, "\n".join(lines), color="white", fontsize=9.5, family="monospace",
                 va="top", linespacing=1.35)
    output = Path(output)
    with atomic_output_path(output, overwrite=True) as temporary:
        fig.savefig(temporary, dpi=TEXT_DPI, facecolor="black", format="png")
    plt.close(fig)
    return output


def shrink_png(path: Path | str, colours: int = 256) -> Path:
    """Rewrite a PNG with at most ``colours`` colours (no dithering): a fraction of the size, same look."""
    from PIL import Image

    with Image.open(path) as picture:
        reduced = picture.convert("RGB").quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    reduced.save(path, optimize=True)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the README's annotator's guide pictures.")
    parser.add_argument("--output", required=True, help="folder for the five PNGs, e.g. Resources/Guide")
    parser.add_argument("--segmentation-model", default=None, help="nnU-Net model folder (default: the bundled one)")
    parser.add_argument("--landmark-model", default=None, help="landmark model folder (default: the bundled one)")
    args = parser.parse_args(argv)
    for path in make_guide_pictures(args.output, args.segmentation_model, args.landmark_model):
        print(f"{path}: {path.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
