"""The dataset folder: nnU-Net layout, versions, and nothing lost when processes crash, race or fail."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dataset_child import case_version, small_case
from SternumSSMLib import dataset as dataset_module
from SternumSSMLib.dataset import (
    DATASET_JSON,
    MANIFEST,
    STAGING,
    DatasetError,
    add_case_version,
    current_records,
    dataset_problems,
    nnunet_labels,
    open_dataset,
    read_manifest,
    recover_dataset,
    restore_version,
    sha256_file,
    suggest_case_id,
)

CHILD = Path(__file__).with_name("dataset_child.py")


def run_child(root: Path, case_id: str, seed: int, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHILD), str(root), case_id, str(seed), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its content hash (files) and mode."""
    return {
        p.relative_to(root).as_posix(): (sha256_file(p) if p.is_file() else "dir", p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


def test_new_dataset_is_nnunet_v2_with_our_labels(tmp_path):
    root = tmp_path / "Dataset501_Sternum"
    record = add_case_version(root, case_version("case_0001", 1))
    description = json.loads((root / DATASET_JSON).read_text())
    assert description["channel_names"] == {"0": "CT"}
    assert description["labels"] == {"background": 0, "Manubrium": 1, "Sternal_body": 2, "Xiphoid": 3, "Cartilage": 4}
    assert description["numTraining"] == 1
    assert description["file_ending"] == ".nrrd"
    assert record["files"]["image"]["path"] == "imagesTr/case_0001_0000.nrrd"
    assert record["files"]["labels"]["path"] == "labelsTr/case_0001.nrrd"
    assert record["files"]["landmarks_csv"]["path"] == "landmarks/case_0001.csv"
    _, labels, _ = small_case(1)
    written = sitk.ReadImage(str(root / "labelsTr/case_0001.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels.array)
    assert dataset_problems(root) == []


def test_missing_parent_folders_of_a_new_dataset_are_created(tmp_path):
    root = tmp_path / "not" / "yet" / "Dataset501_Sternum"
    add_case_version(root, case_version("case_0001", 1))
    assert (root / DATASET_JSON).is_file() and dataset_problems(root) == []


def test_reexport_of_the_same_image_is_a_new_version_and_the_old_one_is_archived(tmp_path):
    root = tmp_path / "ds"
    first = add_case_version(root, case_version("case_0001", 1))
    old_label_hash = first["files"]["labels"]["sha256"]
    second = add_case_version(root, case_version("case_0001", 1))
    assert second["version"] == 2
    records = read_manifest(root)
    assert [(r["version"], r["state"]) for r in records] == [(1, "archived"), (2, "current")]
    archived = records[0]
    assert archived["files"]["labels"]["path"] == "archive/case_0001/v1/case_0001.nrrd"
    assert sha256_file(root / archived["files"]["labels"]["path"]) == old_label_hash
    assert json.loads((root / DATASET_JSON).read_text())["numTraining"] == 1
    assert dataset_problems(root) == []


def test_a_different_image_under_an_existing_id_needs_replace_which_archives(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    before = snapshot(root)
    with pytest.raises(FileExistsError, match="different image"):
        add_case_version(root, case_version("case_0001", 2))
    assert snapshot(root) == before
    record = add_case_version(root, case_version("case_0001", 2), replace=True)
    assert record["version"] == 2
    archived = read_manifest(root)[0]
    assert archived["archive_reason"] == "replaced"
    assert (root / archived["files"]["image"]["path"]).is_file()
    assert dataset_problems(root) == []


def test_an_archived_version_can_be_restored(tmp_path):
    root = tmp_path / "ds"
    first = add_case_version(root, case_version("case_0001", 1))
    add_case_version(root, case_version("case_0001", 2), replace=True)
    restored = restore_version(root, "case_0001", 1)
    assert restored["version"] == 3 and restored["restored_from"] == 1
    assert restored["files"]["labels"]["sha256"] == first["files"]["labels"]["sha256"]
    assert [r["state"] for r in read_manifest(root)] == ["archived", "archived", "current"]
    assert dataset_problems(root) == []


def test_test_split_goes_to_imagests_and_never_into_training(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    case = case_version("held_out", 2)
    case.split = "test"
    record = add_case_version(root, case)
    assert record["files"]["image"]["path"] == "imagesTs/held_out_0000.nrrd"
    assert record["files"]["landmarks_csv"]["path"] == "landmarksTs/held_out.csv"
    assert json.loads((root / DATASET_JSON).read_text())["numTraining"] == 1
    with pytest.raises(DatasetError, match="never changes split"):
        add_case_version(root, case_version("held_out", 2))
    assert not (root / "imagesTr" / "held_out_0000.nrrd").exists()
    assert dataset_problems(root) == []


def test_labels_that_disagree_with_ours_are_refused(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    description = json.loads((root / DATASET_JSON).read_text())
    description["labels"] = {"background": 0, "Sternum": 1, "Cartilage": 2}
    (root / DATASET_JSON).write_text(json.dumps(description))
    before = snapshot(root)
    with pytest.raises(DatasetError, match=r"labels are .*Sternum.*expected"):
        add_case_version(root, case_version("case_0002", 2))
    assert snapshot(root) == before


def test_missing_dataset_json_is_an_error_and_changes_nothing(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    (root / DATASET_JSON).unlink()
    before = snapshot(root)
    with pytest.raises(DatasetError, match=r"no dataset\.json"):
        add_case_version(root, case_version("case_0002", 2))
    assert snapshot(root) == before


def test_read_only_dataset_is_an_error_and_changes_nothing(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    before = snapshot(root)
    root.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="read-only"):
            add_case_version(root, case_version("case_0002", 2))
        root.chmod(0o755)
        assert snapshot(root) == before
    finally:
        root.chmod(0o755)


def test_full_disk_is_a_clear_error_and_changes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    add_case_version(root, case_version("case_0002", 2))
    before = snapshot(root)
    real_write = sitk.WriteImage
    calls = []

    def write_until_full(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:  # the image fits, the label map does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", write_until_full)
    with pytest.raises(OSError, match=r"disk holding .* is full; case case_0002 was not written") as raised:
        add_case_version(root, case_version("case_0002", 2))  # a new version of an existing case
    assert raised.value.errno == errno.ENOSPC
    assert snapshot(root) == before


def test_files_the_manifest_does_not_know_are_not_overwritten(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    (root / "labelsTr" / "stray.nrrd").write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="manifest does not know it"):
        add_case_version(root, case_version("stray", 2))
    assert (root / "labelsTr" / "stray.nrrd").read_bytes() == b"someone else's file"
    assert "labelsTr/stray.nrrd is not in the manifest" in dataset_problems(root)


def test_a_non_dataset_folder_is_not_taken_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"holds files .* but no dataset\.json"):
        open_dataset(tmp_path, create=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_suggested_ids_skip_every_id_ever_used(tmp_path):
    root = tmp_path / "ds"
    assert suggest_case_id(root) == "case_0001"
    add_case_version(root, case_version("case_0001", 1))
    add_case_version(root, case_version("case_0002", 2))
    assert suggest_case_id(root) == "case_0003"
    assert nnunet_labels()["Cartilage"] == 4


# ---------------------------------------------------------------------------
# Crashes and races: real child processes
# ---------------------------------------------------------------------------


def _files_under_final_names(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and STAGING not in p.relative_to(root).parts and p.name != ".sternum-ssm.lock"
    ]


def _known_hashes(root: Path) -> set[str]:
    """Hashes of every complete file the manifest or a pending journal knows."""
    known = {entry["sha256"] for record in read_manifest(root) for entry in record["files"].values()}
    for journal in (root / STAGING).glob("*/journal.json") if (root / STAGING).is_dir() else []:
        data = json.loads(journal.read_text())
        known |= {entry["sha256"] for record in data["manifest"] for entry in record["files"].values()}
    return known


def test_a_full_run_makes_many_commit_operations(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    result = run_child(root, "case_0001", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["operations"] >= 30


@pytest.mark.slow  # 20-30 s on 2 cores: one child process per commit operation
def test_killed_export_at_every_commit_operation_leaves_the_dataset_consistent(tmp_path):
    """Kill a child re-exporting case_0001 (archive + install) before each of its file-system
    operations in turn; after each kill no file under a final name is partial, and after
    recovery dataset.json, manifest and files agree and no version of the case is lost."""
    root = tmp_path / "ds"
    first = add_case_version(root, case_version("case_0001", 1))
    add_case_version(root, case_version("case_0002", 2))
    operations = 36
    seen_outcomes = set()
    for kill_at in range(1, operations + 1):
        result = run_child(root, "case_0001", 1, "--kill-at", str(kill_at))
        if result.returncode == 0:
            break  # past the last operation: the run finished
        assert result.returncode == 77, result.stdout + result.stderr
        # Before any recovery: every file under a final name is whole (its hash is a known version).
        known = _known_hashes(root)
        for path in _files_under_final_names(root):
            if path.parent == root:
                if path.name in (DATASET_JSON, MANIFEST):
                    json.loads(path.read_text().splitlines()[0] if path.name == MANIFEST else path.read_text())
                continue  # leftover temporaries of an atomic write start with '.', recovery removes them
            assert sha256_file(path) in known, f"kill at {kill_at}: {path} is not a complete known file"
        recover_dataset(root)
        assert dataset_problems(root) == [], f"kill at {kill_at}"
        records = read_manifest(root)
        current = {r["case_id"]: r["version"] for r in current_records(records)}
        seen_outcomes.add(current["case_0001"])
        versions = [r for r in records if r["case_id"] == "case_0001"]
        assert {r["files"]["labels"]["sha256"] for r in versions} == {first["files"]["labels"]["sha256"]}
        assert json.loads((root / DATASET_JSON).read_text())["numTraining"] == 2
    else:
        pytest.fail(f"the export made more than {operations} operations; raise the count")
    assert len(seen_outcomes) > 1, "kills must hit both before and after the commit point"
    assert not any(p.name.startswith(".") and "partial" in p.name for p in root.rglob("*"))


def test_two_processes_exporting_different_cases_both_land(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    start = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(root), case_id, str(seed), "--start-file", str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case_id, seed in (("case_0002", 2), ("case_0003", 3))
    ]
    start.touch()
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, out + err
    assert {r["case_id"] for r in current_records(read_manifest(root))} == {"case_0001", "case_0002", "case_0003"}
    assert json.loads((root / DATASET_JSON).read_text())["numTraining"] == 3
    assert dataset_problems(root) == []


def test_two_processes_exporting_the_same_case_id_lose_nothing(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    start = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(root), "case_0009", str(seed), "--start-file", str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (5, 6)
    ]
    start.touch()
    outputs = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        outputs.append(json.loads(out))
    winners = [o for o in outputs if "version" in o]
    losers = [o for o in outputs if "error" in o]
    assert len(winners) == 1 and len(losers) == 1, outputs
    assert "already exists" in losers[0]["error"] and "different image" in losers[0]["error"]
    assert [r["version"] for r in read_manifest(root) if r["case_id"] == "case_0009"] == [1]
    assert dataset_problems(root) == []


def test_interrupted_atomic_write_leftovers_are_cleaned(tmp_path):
    root = tmp_path / "ds"
    add_case_version(root, case_version("case_0001", 1))
    leftover = root / ".manifest.0123abcd.partial.jsonl"
    leftover.write_text("half")
    (root / STAGING / "case_0002-v1-deadbeef" / "imagesTr").mkdir(parents=True)
    (root / STAGING / "case_0002-v1-deadbeef" / "imagesTr" / "case_0002_0000.nrrd").write_text("half")
    assert any("unfinished changes" in p for p in dataset_problems(root))
    done = recover_dataset(root)
    assert done == ["discarded case_0002-v1-deadbeef", "removed .manifest.0123abcd.partial.jsonl"]
    assert dataset_problems(root) == []
    assert dataset_module.LOCK_FILE in os.listdir(root)
