"""A child process that adds one small case version to a dataset, for the crash and concurrency tests.

    python dataset_child.py ROOT CASE_ID SEED [--kill-at N] [--replace] [--start-file PATH]

It writes the files through the real writers (SimpleITK NRRD, landmark CSV). With ``--kill-at N``
the process dies (``os._exit``, no clean-up, like SIGKILL) just before its N-th file-system
commit operation (``os.replace`` or ``os.fsync``). With ``--start-file`` it waits until that file
exists, so that two children start together. It prints the new record as JSON, or the error.
``--count`` prints how many such operations a full run makes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.dataset import CaseVersion, add_case_version
from SternumSSMLib.geometry import ImageGeometry, PointSet, Volume
from SternumSSMLib.landmark_files import write_landmarks_csv

GEOMETRY = ImageGeometry(origin_lps=[-10.0, 5.0, 2.0], spacing=[2.0, 2.0, 3.0], direction_lps=np.eye(3), size=(9, 8, 7))


def small_case(seed: int) -> tuple[Volume, Volume, PointSet]:
    rng = np.random.default_rng(seed)
    image = Volume(rng.integers(-1000, 1000, GEOMETRY.shape_kji).astype(np.int16), GEOMETRY)
    labels = Volume(rng.integers(0, 5, GEOMETRY.shape_kji).astype(np.uint8), GEOMETRY)
    ids = default_protocol().ids
    points = PointSet(ids, rng.normal(size=(len(ids), 3)) * 10, "LPS")
    return image, labels, points


def case_version(case_id: str, seed: int) -> CaseVersion:
    image, labels, points = small_case(seed)
    writers = {
        "image": lambda path: write_volume(image, path),
        "labels": lambda path: write_volume(labels, path),
        "landmarks_csv": lambda path: write_landmarks_csv(path, points),
    }
    return CaseVersion(
        case_id, "train", writers, image_sha256=f"seed-{seed}", provenance={"annotator": f"child {seed}"}
    )


def _count_operations(kill_at: int, counter: list[int]) -> None:
    for name in ("replace", "fsync"):
        real = getattr(os, name)

        def wrapped(*args, _real=real, **kwargs):
            counter[0] += 1
            if counter[0] == kill_at:
                os._exit(77)
            return _real(*args, **kwargs)

        setattr(os, name, wrapped)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("case_id")
    parser.add_argument("seed", type=int)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--replace", action="store_true")
    parser.add_argument("--start-file")
    parser.add_argument("--count", action="store_true")
    args = parser.parse_args()
    case = case_version(args.case_id, args.seed)
    counter = [0]
    _count_operations(args.kill_at, counter)
    if args.start_file:
        while not Path(args.start_file).exists():
            time.sleep(0.005)
    try:
        record = add_case_version(args.root, case, replace=args.replace)
    except (ValueError, OSError) as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 3
    print(json.dumps({"case_id": record["case_id"], "version": record["version"], "operations": counter[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
