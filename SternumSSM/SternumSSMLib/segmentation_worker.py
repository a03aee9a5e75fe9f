"""Segmentation in a separate process, so Slicer's GUI never blocks and Cancel can always stop it.

The worker process loads the model once and then serves requests, one JSON object per line
on stdin; it answers with JSON lines on stdout (``ready``, ``progress``, ``done``, ``error``).
Images, label maps and the optional uncertainty map travel as NRRD files (LPS geometry in the header).

:class:`SegmentationWorker` is the Qt-free client: a reader thread puts the worker's messages
into a queue, :meth:`SegmentationWorker.poll` drains it without blocking (Slicer calls it
from a ``QTimer``), and :meth:`SegmentationWorker.cancel` kills the worker's whole process
group, not only the launcher. The next request starts a fresh worker.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

LIB_PARENT = Path(__file__).resolve().parents[1]


class SegmentationWorker:
    """Client side: start, submit, poll, cancel. One request runs at a time."""

    def __init__(self, model_folder: Path | str, preset: str = "fast", device: str = "auto", python: str | None = None):
        self.command = [
            python or sys.executable, "-m", "SternumSSMLib.segmentation_worker",
            "--model", str(model_folder), "--preset", preset, "--device", device,
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        environment = os.environ | {"PYTHONPATH": os.pathsep.join([str(LIB_PARENT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=environment,
            start_new_session=True,  # its own process group, so cancel reaches every child it starts
        )
        # A fresh queue per process: messages of a cancelled worker never reach the next one's client.
        self.messages = queue.Queue()
        threading.Thread(target=self._read, args=(self.process, self.messages), daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen, messages: queue.Queue) -> None:
        for line in process.stdout:
            try:
                messages.put(json.loads(line))
            except json.JSONDecodeError:
                continue  # a library printing to stdout; the protocol lines are JSON
        error = process.stderr.read().strip().splitlines()
        messages.put({"event": "exit", "returncode": process.wait(), "stderr": error[-5:]})

    def submit(
        self,
        image_path: Path | str,
        output_path: Path | str,
        roi_lps: list[float] | None = None,
        uncertainty_path: Path | str | None = None,
    ) -> int:
        """Queue one CT (NRRD/NIfTI file); the label map will be written to ``output_path`` and,
        when ``uncertainty_path`` is given, the per-voxel uncertainty (float, CT grid) there."""
        if not self.running:
            self._start()
        request_id = next(self._ids)
        request = {
            "id": request_id,
            "image": str(image_path),
            "output": str(output_path),
            "roi_lps": roi_lps,
            "uncertainty": None if uncertainty_path is None else str(uncertainty_path),
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return request_id

    def poll(self) -> list[dict]:
        """Every message received so far; never blocks."""
        received = []
        while True:
            try:
                received.append(self.messages.get_nowait())
            except queue.Empty:
                return received

    def cancel(self) -> None:
        """Kill the worker and everything it started; the loaded model is lost."""
        if self.running:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def close(self) -> None:
        if self.running:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.cancel()
        self.process = None


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(model_folder: str, preset: str, device: str) -> int:
    """Worker side: load once, then one request per stdin line until stdin closes."""
    import numpy as np
    import SimpleITK as sitk

    from .geometry import Volume
    from .predict_command import read_ct
    from .roi import Box
    from .segment import segment_ct
    from .segmentation_inference import PredictionSettings, SegmentationModel

    model = SegmentationModel(model_folder, PredictionSettings(preset=preset, device=device))
    _emit({"event": "ready", "load_seconds": model.load_seconds, "model_sha256": model.model_hash})
    for line in sys.stdin:
        request = json.loads(line)
        request_id = request["id"]
        try:
            roi = request.get("roi_lps")
            box = Box(np.array(roi[:3]), np.array(roi[3:])) if roi else None
            uncertainty_path = request.get("uncertainty")
            outcome = segment_ct(
                model,
                read_ct(Path(request["image"])),
                roi=box,
                progress=lambda done, total, i=request_id: _emit(
                    {"event": "progress", "id": i, "done": done, "total": total}
                ),
                with_uncertainty=uncertainty_path is not None,
            )
            sitk.WriteImage(Volume.to_sitk(outcome.labels), request["output"], True)
            if uncertainty_path is not None:
                sitk.WriteImage(Volume.to_sitk(outcome.uncertainty), uncertainty_path, True)
            flags = [asdict(flag) for flag in outcome.flags]
            _emit(
                {
                    "event": "done",
                    "id": request_id,
                    "output": request["output"],
                    "uncertainty": uncertainty_path,
                    "record": outcome.record,
                    "flags": flags,
                }
            )
        except Exception as error:  # every failure goes back to the client as a message
            _emit({"event": "error", "id": request_id, "message": str(error)})
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="SternumSSM segmentation worker (JSON lines on stdin/stdout)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    return serve(args.model, args.preset, args.device)


if __name__ == "__main__":
    sys.exit(main())
