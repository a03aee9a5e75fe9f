"""Segmentation in a worker process that keeps the model loaded, on the shared background-run protocol.

The client is :class:`SegmentationWorker`, a :class:`~SternumSSMLib.background_run.BackgroundRun`
with a typed :meth:`SegmentationWorker.submit`; messages, poll and cancel are those of
:mod:`SternumSSMLib.background_run`. Its ``done`` message carries ``output`` (label map file),
``uncertainty`` (file or None), ``record`` (provenance) and ``flags`` (QA flags as dicts).
Images, label maps and the optional uncertainty map travel as NRRD files (LPS geometry in the header).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from .background_run import BackgroundRun, Handler, Progress, serve


class SegmentationWorker(BackgroundRun):
    """Client side: one model, preset and device per worker; one request runs at a time."""

    def __init__(self, model_folder: Path | str, preset: str = "fast", device: str = "auto", python: str | None = None):
        arguments = ["--model", str(model_folder), "--preset", preset, "--device", device]
        super().__init__("SternumSSMLib.segmentation_worker", arguments, python=python)

    def submit(
        self,
        image_path: Path | str,
        output_path: Path | str,
        roi_lps: list[float] | None = None,
        uncertainty_path: Path | str | None = None,
        auto_roi: bool = True,
    ) -> int:
        """Queue one CT (NRRD/NIfTI file); returns the request id. The label map will be written to
        ``output_path`` and, when ``uncertainty_path`` is given, the per-voxel uncertainty (float, CT grid)
        there. ``roi_lps`` is ``[lo_x, lo_y, lo_z, hi_x, hi_y, hi_z]`` in LPS millimetres; without it
        ``auto_roi`` lets the model's localiser find the box (:func:`SternumSSMLib.segment.segment_ct`)."""
        return self.send(
            {
                "image": str(image_path),
                "output": str(output_path),
                "roi_lps": roi_lps,
                "uncertainty": None if uncertainty_path is None else str(uncertainty_path),
                "auto_roi": auto_roi,
            }
        )


def load_segmenter(model_folder: str, preset: str, device: str) -> tuple[Handler, dict]:
    """Worker side: load the model once; returns the request handler and the ready fields."""
    import numpy as np
    import SimpleITK as sitk

    from .geometry import Volume
    from .image_files import read_ct
    from .roi import Box
    from .segment import segment_ct
    from .segmentation_inference import PredictionSettings, SegmentationModel

    model = SegmentationModel(model_folder, PredictionSettings(preset=preset, device=device))

    def handle(request: dict, progress: Progress) -> dict:
        roi = request.get("roi_lps")
        uncertainty_path = request.get("uncertainty")
        outcome = segment_ct(
            model,
            read_ct(Path(request["image"])),
            roi=Box(np.array(roi[:3]), np.array(roi[3:])) if roi else None,
            progress=lambda done, total: progress(done / max(total, 1), f"Segmented {done} of {total} patches"),
            with_uncertainty=uncertainty_path is not None,
            auto_roi=request.get("auto_roi", True),
        )
        sitk.WriteImage(Volume.to_sitk(outcome.labels), request["output"], True)
        if uncertainty_path is not None:
            sitk.WriteImage(Volume.to_sitk(outcome.uncertainty), uncertainty_path, True)
        return {
            "output": request["output"],
            "uncertainty": uncertainty_path,
            "record": outcome.record,
            "flags": [asdict(flag) for flag in outcome.flags],
        }

    return handle, {"load_seconds": model.load_seconds, "model_sha256": model.model_hash}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="SternumSSM segmentation worker (JSON lines on stdin/stdout)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    return serve(lambda: load_segmenter(args.model, args.preset, args.device))


if __name__ == "__main__":
    sys.exit(main())
