"""Batch prediction on a real Dask local cluster (2 workers, real nnU-Net and SCN), and the annotators' worklist."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from SternumLandmarksLib.batch_landmarks import scn_landmark_step
from SternumSSMLib.batch import MANIFEST, SOURCES, plan_jobs, read_batch_manifest, run_batch
from SternumSSMLib.batch_case import OUTPUT_SUFFIXES, STAGING, CaseSteps, SegmentationStep
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.cli import main
from SternumSSMLib.dataset import sha256_file
from SternumSSMLib.export import export_case
from SternumSSMLib.geometry import ImageGeometry, Volume
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.provenance import volume_sha256
from SternumSSMLib.roi import Box, crop, index_slices
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, PredictionSettings
from SternumSSMLib.worklist import (
    CaseClaimedError,
    case_files,
    claim_case,
    claim_next,
    pipeline_counts,
    rank_cases,
    release,
    write_worklist,
)

# The sternum and the cartilage's anterior half at 3 mm: six nnU-Net tiles, a few seconds a case.
STERNUM_BOX = Box(np.array([-130.0, -160.0, -230.0]), np.array([130.0, -40.0, 50.0]))
GOOD_CASES = ("phantom000", "phantom001", "phantom002")


@pytest.fixture(scope="module")
def cts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cts")
    for seed, case_id in enumerate(GOOD_CASES):
        phantom = generate_phantom(PhantomParameters(seed=seed, spacing=(3.0, 3.0, 3.0)))
        write_volume(crop(phantom.image, index_slices(phantom.image.geometry, STERNUM_BOX)), folder / f"{case_id}.nrrd")
    # A truncated NRRD: the header promises voxels the file does not hold.
    (folder / "corrupt.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9 9\nencoding: raw\n\n\0\0")
    return folder


@pytest.fixture(scope="module")
def steps() -> CaseSteps:
    return CaseSteps(
        SegmentationStep.create(BUNDLED_MODEL, PredictionSettings(device="cpu")),
        scn_landmark_step(device="cpu"),
        torch_threads=1,
    )


def assert_written_once(output: Path, case_ids: tuple[str, ...], run: str) -> None:
    """Each case: one 'done' line in this run, four files from one attempt, nothing half-written left."""
    done = Counter(r["case_id"] for r in read_batch_manifest(output) if r["run"] == run and r["status"] == "done")
    assert done == Counter(case_ids)
    for case_id in case_ids:
        record = json.loads((output / f"{case_id}.json").read_text())
        for suffix in OUTPUT_SUFFIXES[:3]:
            assert record["files"][suffix] == sha256_file(output / f"{case_id}{suffix}"), (case_id, suffix)
        assert record["landmarks"]["placed"] > 0 and 0.0 <= record["uncertainty"]["uncertain_fraction"] <= 1.0
    assert not (output / STAGING).exists()
    assert not [path for path in output.rglob("*") if ".partial" in path.name]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.name != MANIFEST}


@pytest.mark.slow
def test_batch_finishes_good_cases_records_the_corrupt_one_and_reruns_nothing(cts, steps, tmp_path):
    output = tmp_path / "batch"
    report = run_batch(plan_jobs([str(cts)], output), steps, output, workers=2, show_progress=False)

    assert (report.workers, report.count("done"), report.count("failed")) == (2, 3, 1)
    assert_written_once(output, GOOD_CASES, report.run)
    failed = next(record for record in report.records if record["status"] == "failed")
    assert failed["case_id"] == "corrupt" and failed["error"].startswith("ValueError: Cannot read CT <CT of corrupt>")
    # No input path (which may name a patient) in any output but the private index.
    for path in output.iterdir():
        if path.is_file() and path.name != SOURCES:
            assert str(cts) not in path.read_text(errors="ignore"), path
    # Models load once per worker process: two models on each worker that ran a good case.
    loads = Counter((r["worker"], model) for r in report.records for model in r["models_loaded"])
    good_workers = {r["worker"] for r in report.records if r["status"] == "done"}
    assert set(loads.values()) == {1} and len(loads) == 2 * len(good_workers)

    before = snapshot(output)
    rerun = run_batch(plan_jobs([str(cts)], output), steps, output, workers=2, show_progress=False)
    assert rerun.workers == 0 and rerun.count("skipped") == 4  # no cluster was even started
    assert snapshot(output) == before

    retry = run_batch(plan_jobs([str(cts)], output), steps, output, workers=1, retry_failed=True, show_progress=False)
    assert (retry.count("skipped"), retry.count("failed")) == (3, 1)
    assert snapshot(output) == before


@pytest.mark.slow
def test_killing_a_worker_mid_case_still_writes_every_case_once(cts, steps, tmp_path):
    from distributed import Client, LocalCluster

    output = tmp_path / "batch"
    jobs = [job for job in plan_jobs([str(cts)], output) if job.case_id in GOOD_CASES]
    killed = {}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):

        def kill_a_busy_worker() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = {address: keys for address, keys in client.processing().items() if keys}
                if busy:
                    address = next(iter(busy))
                    pid = client.run(os.getpid, workers=[address])[address]
                    time.sleep(1.0)  # inside the case: reading, loading models or segmenting
                    os.kill(pid, signal.SIGKILL)
                    killed[pid] = busy[address]
                time.sleep(0.1)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        report = run_batch(jobs, steps, output, address=cluster.scheduler_address, show_progress=False)
        killer.join()

    assert killed, "no worker was killed"
    assert report.count("done") == 3 and report.count("failed") == 0
    assert_written_once(output, GOOD_CASES, report.run)
    (pid,) = killed
    assert all(not record["worker"].endswith(f":{pid}") for record in report.records)


def fake_case(batch: Path, case_id: str, qa: list[str], uncertain: float, confidence: float, image_sha256: str) -> None:
    """A committed case record with the fields the worklist reads (no prediction needed)."""
    flags = [{"code": c, "severity": "error" if c == "missing" else "warning", "message": f"{c} flag"} for c in qa]
    record = {
        "case_id": case_id,
        "image_sha256": image_sha256,
        "qa_flags": flags,
        "uncertainty": {"uncertain_fraction": uncertain, "uncertain_ml": 1.0},
        "landmarks": {"mean_confidence": confidence, "placed": 34, "flags": []},
    }
    (batch / f"{case_id}.seg.nrrd").write_bytes(b"")
    (batch / f"{case_id}.json").write_text(json.dumps(record))


def tiny_image() -> Volume:
    geometry = ImageGeometry(origin_lps=[0, 0, 0], spacing=[1, 1, 1], direction_lps=np.eye(3), size=(4, 4, 4))
    return Volume(np.arange(64, dtype=np.int16).reshape(4, 4, 4), geometry)


def test_worklist_ranks_claims_and_drops_exported_cases(tmp_path, capsys):
    batch, dataset = tmp_path / "batch", tmp_path / "dataset"
    batch.mkdir()
    image = tiny_image()
    fake_case(batch, "sure", [], 0.01, 0.95, "a")
    fake_case(batch, "doubtful", [], 0.40, 0.50, "b")
    fake_case(batch, "warned", ["volume"], 0.01, 0.99, "c")
    fake_case(batch, "broken", ["missing", "volume"], 0.0, 1.0, "d")
    fake_case(batch, "exported", ["missing"], 0.9, 0.1, volume_sha256(image))
    (batch / SOURCES).write_text(json.dumps({"warned": {"source": "/data/ct/warned.nrrd", "series_uid": None}}))

    # Exported under another case id: recognised by its image hash.
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    export_case(dataset, "case_0001", image, Volume(labels, image.geometry))
    path, entries = write_worklist(batch, dataset)
    assert [e.case_id for e in entries] == ["broken", "warned", "doubtful", "sure"]
    assert entries[2].score == pytest.approx(0.5 * 0.40 + 0.5 * 0.50)
    assert "missing flag" in entries[0].reasons[0]
    assert json.loads(path.read_text())["cases"][0]["case_id"] == "broken"

    first = claim_next(batch, dataset, "Ann")
    assert first.case_id == "broken" and claim_next(batch, dataset, "Ann").case_id == "broken"  # her open case
    with pytest.raises(CaseClaimedError, match="claimed by Ann"):
        claim_case(batch, "broken", "Bob")
    assert main(["worklist", "--batch", str(batch), "--claim", "broken", "--annotator", "Bob"]) == 2
    assert claim_next(batch, dataset, "Bob").case_id == "warned"
    assert case_files(batch, "warned")["ct"] == Path("/data/ct/warned.nrrd")
    assert [e.claimed_by for e in rank_cases(batch, dataset)][:2] == ["Ann", "Bob"]

    # A stale claim may be taken over; the old holder's release then changes nothing.
    taken = claim_case(batch, "broken", "Bob", stale_after_s=0.0)
    assert not release(batch, first) and release(batch, taken)
    assert pipeline_counts(batch, dataset) == {"predicted": 5, "claimed": 1, "corrected": 0, "exported": 1}
    assert main(["dataset-summary", "--dataset", str(dataset), "--batch", str(batch)]) == 0
    assert "Batch: 5 predicted, 1 claimed, 0 corrected, 1 exported." in capsys.readouterr().out


def test_case_ids_are_names_or_stable_numbers(tmp_path):
    cts, output = tmp_path / "cts", tmp_path / "batch"
    cts.mkdir()
    for name in ("Doe, John.nrrd", "b.nrrd"):
        (cts / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"not usable case ids.*--case-prefix"):
        plan_jobs([str(cts)], output)
    first = plan_jobs([str(cts)], output, case_prefix="nmdid")
    assert [job.case_id for job in first] == ["nmdid_0001", "nmdid_0002"]
    # A later run keeps the numbers of the CTs it knows (from the private index) and numbers new ones after them.
    output.mkdir()
    (output / SOURCES).write_text(json.dumps({j.case_id: {"source": j.source, "series_uid": None} for j in first}))
    (cts / "a.nrrd").write_bytes(b"")
    again = plan_jobs([str(cts)], output, case_prefix="nmdid")
    assert {Path(job.source).name: job.case_id for job in again} == {
        "Doe, John.nrrd": "nmdid_0001", "b.nrrd": "nmdid_0002", "a.nrrd": "nmdid_0003"
    }  # fmt: skip
