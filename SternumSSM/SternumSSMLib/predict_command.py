"""``sternum-ssm predict``: segment CTs with an nnU-Net model, headless.

Inputs are image files (NRRD, NIfTI, MetaImage), folders of them, and DICOM series
folders. For each CT it writes ``<case>.seg.nrrd`` (standard names and values) and
``<case>.json`` (settings, timing, post-processing, QA flags, model hash); the case of
a DICOM series is its folder's name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .atomic import write_text_atomic
from .geometry import Volume
from .image_files import case_id_of, check_ct_file, ct_files, read_ct
from .segmentation_inference import BUNDLED_MODEL, SegmentationModel
from .segmentation_options import prediction_settings, roi_box


def write_prediction(labels: Volume, record: dict, segmentation_path: Path, record_path: Path) -> None:
    """The .seg.nrrd (standard names and values, via Slicer's writer) and its JSON record."""
    from .segmentation_nodes import write_segmentation_file

    write_segmentation_file(labels, segmentation_path, name=record_path.stem)
    write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")


class ReadAhead:
    """The CTs of ``paths`` in order, each read in a thread while the caller works on the one before:
    SimpleITK releases the GIL while it reads, so the first read overlaps loading the model and each
    later one the segmentation before it. At most one CT waits in memory."""

    def __init__(self, paths: list[Path], series_uid: str | None) -> None:
        self._paths, self._series_uid = list(paths), series_uid
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ct")
        self._next = self._submit(0)

    def _submit(self, index: int):
        if index >= len(self._paths):
            return None
        return self._pool.submit(read_ct, self._paths[index], self._series_uid)

    def __iter__(self) -> Iterator[tuple[Path, Volume]]:
        for index, path in enumerate(self._paths):
            image = self._next.result()
            self._next = self._submit(index + 1)
            yield path, image

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _progress_bar(name: str):
    def show(done: int, total: int) -> None:
        filled = int(30 * done / max(total, 1))
        print(
            f"\r{name}: [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} tiles", end="", file=sys.stderr, flush=True
        )
        if done == total:
            print(file=sys.stderr)

    return show


def command_predict(args: argparse.Namespace) -> int:
    from .segment import segment_ct

    files = ct_files(args.inputs)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    targets = {path: (output / f"{case_id_of(path)}.seg.nrrd", output / f"{case_id_of(path)}.json") for path in files}
    for path in files:
        check_ct_file(path, args.series_uid)
    existing = [str(t) for pair in targets.values() for t in pair if t.exists()]
    if existing:
        raise FileExistsError(f"Output files exist ({', '.join(existing[:4])}); choose another --output folder.")
    print(
        f"Loading model {args.model or BUNDLED_MODEL} (checkpoints are only loaded from folders you chose)",
        file=sys.stderr,
    )
    with ReadAhead(files, args.series_uid) as cts:
        model = SegmentationModel(args.model, prediction_settings(args))
        roi = roi_box(args)
        for path, ct in cts:
            segmentation_path, record_path = targets[path]
            outcome = segment_ct(model, ct, roi=roi, progress=_progress_bar(path.name))
            record = outcome.record | {"input": str(path), "model_load_seconds": round(model.load_seconds, 3)}
            write_prediction(outcome.labels, record, segmentation_path, record_path)
            flags = "; ".join(flag.message for flag in outcome.flags) or "no QA flags"
            print(f"{path.name}: {segmentation_path.name} in {outcome.record['total_seconds']:.1f} s; {flags}")
    return 0
