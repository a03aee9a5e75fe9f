"""A training dataset folder that nnU-Net trains on directly, with a manifest of every case version.

Layout::

    dataset.json                        nnU-Net v2: channel_names, labels, numTraining, file_ending
    imagesTr/<case>_0000<ending>        CT in HU (training split)
    labelsTr/<case><ending>             standard label values 0-4
    landmarks/<case>.csv, .mrk.json     landmarks of training cases
    imagesTs/ labelsTs/ landmarksTs/    held-out test split, never counted in numTraining
    archive/<case>/v<N>/                earlier versions of a case, moved here and never deleted
    manifest.jsonl                      one JSON record per case version, current and archived
    .sternum-ssm.lock                   cross-process lock held around every change
    .staging/<transaction>/             files of a change in progress (with journal.json: committed)

A change stays whole, even when the process is killed at any instant:

1. Under the lock, changes left by killed processes are finished (journal present) or discarded.
2. The new files are written and flushed under ``.staging/<transaction>/``.
3. ``journal.json`` is written atomically: the moves to make, the whole new manifest and the new
   ``dataset.json``. Once it exists the change is committed.
4. The moves run (the old version to the archive first, then the new files to their final
   names), then the manifest and ``dataset.json`` are replaced, then the staging folder goes.
   Every step can be redone, so finishing a committed change after a kill is step 4 again.

No file under a final name is ever partly written: each arrives by an atomic rename.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .anatomy import label_scheme
from .atomic import fsync_directory, fsync_file, is_read_only, write_text_atomic
from .image_files import read_ct
from .provenance import sha256_file
from .segmentation_inference import check_ct_volume

DATASET_JSON = "dataset.json"
MANIFEST = "manifest.jsonl"
LOCK_FILE = ".sternum-ssm.lock"
STAGING = ".staging"
ARCHIVE = "archive"
JOURNAL = "journal.json"
FILE_ENDINGS = (".nrrd", ".nii.gz")
SPLITS = ("train", "test")
ROLES = ("image", "labels", "landmarks_csv", "landmarks_mrk", "pseudo_landmarks_csv")
CHANNEL_NAMES = {"0": "CT"}
# Temporary names written by atomic.atomic_output_path: ".<stem>.<8 hex>.partial<suffix>".
_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{8}\.partial")
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class DatasetError(ValueError):
    """The dataset folder cannot take this change; the message says why and what to do."""


def nnunet_labels() -> dict[str, int]:
    """``dataset.json`` labels from the anatomy definition: background 0, then the four classes."""
    scheme = label_scheme()
    return {"background": scheme.background_value, **{c.name: c.value for c in scheme.classes}}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Dataset:
    """An opened dataset folder; paths of a case's files are relative to ``root``, with '/'."""

    root: Path
    file_ending: str

    def relative_path(self, role: str, case_id: str, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"Split {split!r} is not one of {SPLITS}.")
        tag = "Tr" if split == "train" else "Ts"
        landmarks = self.landmark_folder(split)
        paths = {
            "image": f"images{tag}/{case_id}_0000{self.file_ending}",
            "labels": f"labels{tag}/{case_id}{self.file_ending}",
            "landmarks_csv": f"{landmarks}/{case_id}.csv",
            "landmarks_mrk": f"{landmarks}/{case_id}.mrk.json",
            # A subfolder, so readers of <landmarks>/*.csv never take pseudo-landmarks for a case.
            "pseudo_landmarks_csv": f"{landmarks}/pseudo/{case_id}.csv",
        }
        if role not in paths:
            raise ValueError(f"Unknown file role {role!r}; expected one of {ROLES}.")
        return paths[role]

    @staticmethod
    def landmark_folder(split: str) -> str:
        """The folder (relative to ``root``) of a split's landmark files."""
        return "landmarks" if split == "train" else "landmarksTs"

    def archive_folder(self, case_id: str, version: int) -> str:
        return f"{ARCHIVE}/{case_id}/v{version}"


@dataclass
class CaseVersion:
    """One version of a case, as the exporter hands it over.

    ``writers`` maps a file role (``ROLES``; image and labels are required) to a function that
    writes that file at the path it is given. ``image_sha256`` identifies the image content:
    a re-export of the same image becomes a new version, a different image under an existing
    case id needs ``replace``. ``provenance`` is stored in the manifest record as it is.
    """

    case_id: str
    split: str
    writers: Mapping[str, Callable[[Path], object]]
    image_sha256: str
    provenance: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Opening, creating and locking
# ---------------------------------------------------------------------------


def open_dataset(
    root: Path | str, create: bool = False, file_ending: str | None = None, writable: bool = False
) -> Dataset:
    """Check a dataset folder and return it; with ``create`` a missing or empty folder becomes a new dataset.

    Refused, with a message, and without changing anything: a folder that holds files but no
    ``dataset.json``; a ``dataset.json`` whose labels, channels or file ending disagree with
    ours; a read-only folder when ``writable``.
    """
    root = Path(root).absolute()
    if file_ending is not None and file_ending not in FILE_ENDINGS:
        raise DatasetError(f"File ending {file_ending!r} is not supported; use one of {FILE_ENDINGS}.")
    if not (root / DATASET_JSON).is_file():
        if not create:
            raise DatasetError(f"{root} is not a dataset: it has no {DATASET_JSON}.")
        return _create_dataset(root, file_ending or FILE_ENDINGS[0])
    if writable and is_read_only(root):
        raise PermissionError(f"Dataset folder {root} is read-only; nothing was written. Make it writable first.")
    description = _read_dataset_json(root)
    problems = dataset_json_problems(description)
    if problems:
        raise DatasetError(
            f"{root / DATASET_JSON} does not match the SternumSSM labels, so it is not mixed: " + "; ".join(problems)
        )
    ending = description["file_ending"]
    if file_ending is not None and file_ending != ending:
        raise DatasetError(f"Dataset {root} stores {ending} files; {file_ending} was requested.")
    return Dataset(root=root, file_ending=ending)


def dataset_json_problems(description: dict) -> list[str]:
    """Why a ``dataset.json`` cannot hold our cases (empty when it can)."""
    problems = []
    labels = description.get("labels")
    if labels != nnunet_labels():
        problems.append(f"labels are {labels}, expected {nnunet_labels()}")
    if description.get("channel_names") != CHANNEL_NAMES:
        problems.append(f"channel_names are {description.get('channel_names')}, expected {CHANNEL_NAMES}")
    if description.get("file_ending") not in FILE_ENDINGS:
        problems.append(f"file_ending is {description.get('file_ending')!r}, expected one of {FILE_ENDINGS}")
    if not isinstance(description.get("numTraining"), int):
        problems.append("numTraining is missing or not a number")
    return problems


def new_dataset_json(file_ending: str, num_training: int = 0) -> dict:
    return {
        "name": "SternumSSM",
        "description": "Sternum and costal cartilage from CT, written by SternumSSM; provenance in manifest.jsonl",
        "channel_names": dict(CHANNEL_NAMES),
        "labels": nnunet_labels(),
        "numTraining": num_training,
        "file_ending": file_ending,
    }


def _create_dataset(root: Path, file_ending: str) -> Dataset:
    if root.exists():
        if not root.is_dir():
            raise DatasetError(f"{root} is a file, not a folder.")
        foreign = [p.name for p in root.iterdir() if p.name != LOCK_FILE]
        if foreign:
            raise DatasetError(
                f"{root} holds files ({', '.join(sorted(foreign)[:5])}) but no {DATASET_JSON}; it is not a dataset "
                "(or its dataset.json was lost). Choose an empty folder, or restore dataset.json."
            )
        if is_read_only(root):
            raise PermissionError(f"Folder {root} is read-only; nothing was written.")
    else:
        ancestor = next(folder for folder in root.parents if folder.exists())
        if not ancestor.is_dir():
            raise DatasetError(f"Cannot create dataset {root}: {ancestor} is a file, not a folder.")
        if is_read_only(ancestor):
            raise PermissionError(f"Cannot create dataset {root}: {ancestor} is read-only; nothing was written.")
        root.mkdir(parents=True, exist_ok=True)
    with dataset_lock(root):
        if not (root / DATASET_JSON).is_file():  # another process may have created it meanwhile
            write_text_atomic(root / MANIFEST, "")
            write_text_atomic(root / DATASET_JSON, _json_text(new_dataset_json(file_ending)))
    return open_dataset(root, file_ending=file_ending)


@contextlib.contextmanager
def dataset_lock(root: Path | str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold the dataset's cross-process lock (a lock on ``.sternum-ssm.lock``; freed if the holder dies)."""
    path = Path(root) / LOCK_FILE
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Dataset {root} has been locked by another export for {timeout_s:.0f} s.")
            time.sleep(0.02)
        try:
            yield
        finally:
            _unlock(handle)


def _try_lock(handle) -> bool:
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        raise
    return True


def _unlock(handle) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _read_dataset_json(root: Path) -> dict:
    try:
        description = json.loads((root / DATASET_JSON).read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"Cannot read {root / DATASET_JSON}: {error}") from error
    if not isinstance(description, dict):
        raise DatasetError(f"{root / DATASET_JSON} is not a JSON object.")
    return description


def read_manifest(root: Path | str) -> list[dict]:
    """All case-version records, oldest first."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise DatasetError(f"{path}, line {number} is not valid JSON: {error}") from error
    return records


def current_records(records: list[dict], split: str | None = None) -> list[dict]:
    """The record of each case's current version (optionally of one split)."""
    return [r for r in records if r["state"] == "current" and (split is None or r["split"] == split)]


def check_case_id(case_id: str) -> str:
    if not _CASE_ID.match(case_id):
        raise ValueError(
            f"Case id {case_id!r} may hold only letters, digits, '-' and '_', and must start with a letter or digit."
        )
    return case_id


def suggest_case_id(root: Path | str | None, prefix: str = "case") -> str:
    """The next unused id ``<prefix>_NNNN`` (counting every id the dataset ever held)."""
    used = set()
    if root is not None and (Path(root) / MANIFEST).is_file():
        used = {r["case_id"] for r in read_manifest(root)}
    number = 1
    while f"{prefix}_{number:04d}" in used:
        number += 1
    return f"{prefix}_{number:04d}"


# ---------------------------------------------------------------------------
# Adding a case version
# ---------------------------------------------------------------------------


def add_case_version(
    root: Path | str, case: CaseVersion, replace: bool = False, create: bool = True, file_ending: str | None = None
) -> dict:
    """Write one case version into the dataset and return its manifest record.

    The first export of a case id is version 1. Exporting the same image again makes the next
    version and moves the previous one to ``archive/<case>/v<N>/``. A different image under an
    existing id is refused unless ``replace``, which archives the old case the same way.
    Nothing is ever deleted, and a case never changes split.
    """
    check_case_id(case.case_id)
    if case.split not in SPLITS:
        raise ValueError(f"Split {case.split!r} is not one of {SPLITS}.")
    missing = {"image", "labels"} - set(case.writers)
    if missing or set(case.writers) - set(ROLES):
        raise ValueError(
            f"A case needs writers for image and labels (and may have {ROLES[2:]}); got {sorted(case.writers)}."
        )
    dataset = open_dataset(root, create=create, file_ending=file_ending, writable=True)
    with dataset_lock(dataset.root):
        recover(dataset)
        records = read_manifest(dataset.root)
        description = _read_dataset_json(dataset.root)
        version, previous = _plan_version(dataset, records, case, replace)
        transaction = f"{case.case_id}-v{version}-{uuid.uuid4().hex[:8]}"
        staging = dataset.root / STAGING / transaction
        try:
            files = _stage_files(dataset, staging, case)
            journal = _journal(dataset, records, description, case, version, previous, files, transaction, replace)
            write_text_atomic(staging / JOURNAL, _json_text(journal))
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            _remove_if_empty(dataset.root / STAGING)
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise OSError(
                    errno.ENOSPC,
                    f"The disk holding {dataset.root} is full; case {case.case_id} was not written and "
                    "no file in the dataset changed. Free some space and export again.",
                ) from error
            raise
        # Committed: from here on a failure leaves the journal, and the next change finishes it.
        _apply_journal(dataset, staging, journal)
    return journal["manifest"][-1]


def _plan_version(dataset: Dataset, records: list[dict], case: CaseVersion, replace: bool) -> tuple[int, dict | None]:
    history = [r for r in records if r["case_id"] == case.case_id]
    current = next((r for r in history if r["state"] == "current"), None)
    if current is not None:
        if current["split"] != case.split:
            raise DatasetError(
                f"Case {case.case_id} is in the {current['split']} split; a case never changes split, so a test case "
                "cannot reach the training folders. Use another case id."
            )
        if current["image_sha256"] != case.image_sha256 and not replace:
            raise FileExistsError(
                f"Case {case.case_id} already exists (version {current['version']}) with a different image. Choose "
                "another case id, or replace it: the current version is then archived, not deleted."
            )
    owned = {f["path"] for f in current["files"].values()} if current else set()
    for role in case.writers:
        path = dataset.relative_path(role, case.case_id, case.split)
        if (dataset.root / path).exists() and path not in owned:
            raise FileExistsError(
                f"{dataset.root / path} exists but the manifest does not know it; move it out of the dataset first."
            )
    return max((r["version"] for r in history), default=0) + 1, current


def _stage_files(dataset: Dataset, staging: Path, case: CaseVersion) -> dict[str, dict]:
    files = {}
    for role, write in case.writers.items():
        relative = dataset.relative_path(role, case.case_id, case.split)
        staged = staging / relative
        staged.parent.mkdir(parents=True, exist_ok=True)
        write(staged)
        if not staged.is_file():
            raise OSError(f"Writing the {role} of case {case.case_id} produced no file.")
        fsync_file(staged)
        files[role] = {"path": relative, "sha256": sha256_file(staged), "bytes": staged.stat().st_size}
    return files


def _journal(
    dataset: Dataset,
    records: list[dict],
    description: dict,
    case: CaseVersion,
    version: int,
    previous: dict | None,
    files: dict[str, dict],
    transaction: str,
    replace: bool,
) -> dict:
    now = utc_now()
    moves = []
    records = [dict(r) for r in records]
    if previous is not None:
        archive = dataset.archive_folder(case.case_id, previous["version"])
        archived_files = {}
        for role, entry in previous["files"].items():
            target = f"{archive}/{Path(entry['path']).name}"
            moves.append((entry["path"], target))
            archived_files[role] = {**entry, "path": target}
        index = next(
            i
            for i, r in enumerate(records)
            if r is not None and r["case_id"] == case.case_id and r["state"] == "current"
        )
        records[index] = {
            **records[index],
            "state": "archived",
            "files": archived_files,
            "archived_at": now,
            "superseded_by": version,
            "archive_reason": "replaced"
            if replace and previous["image_sha256"] != case.image_sha256
            else "new version",
        }
    staging_relative = Path(STAGING) / transaction
    moves += [((staging_relative / f["path"]).as_posix(), f["path"]) for f in files.values()]
    record = {
        "case_id": case.case_id,
        "version": version,
        "state": "current",
        "split": case.split,
        "exported_at": now,
        "image_sha256": case.image_sha256,
        "files": files,
        **case.provenance,
        "transaction": transaction,
    }
    records.append(record)
    num_training = len(current_records(records, "train"))
    return {
        "transaction": transaction,
        "moves": moves,
        "manifest": records,
        "dataset_json": {**description, "numTraining": num_training},
    }


def _apply_journal(dataset: Dataset, staging: Path, journal: dict) -> None:
    root = dataset.root
    for source, target in journal["moves"]:
        source_path, target_path = root / source, root / target
        # A move is done when its target exists: archive targets are new, versioned paths, and an
        # install target was freed by the archive moves before it (checked before the commit).
        # The source of a done archive move may already hold the newly installed file.
        if target_path.exists():
            continue
        if not source_path.exists():
            raise DatasetError(f"Cannot finish change {journal['transaction']}: neither {source} nor {target} exists.")
        target_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source_path, target_path)
        fsync_directory(target_path.parent)
    manifest_text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in journal["manifest"])
    write_text_atomic(root / MANIFEST, manifest_text, overwrite=True)
    write_text_atomic(root / DATASET_JSON, _json_text(journal["dataset_json"]), overwrite=True)
    shutil.rmtree(staging)
    _remove_if_empty(root / STAGING)
    fsync_directory(root)


def recover(dataset: Dataset) -> list[str]:
    """Finish committed changes and discard uncommitted ones left by killed processes; call under the lock.

    Returns one line per change handled. Also removes temporary files of interrupted atomic writes.
    """
    done = []
    staging_root = dataset.root / STAGING
    if staging_root.is_dir():
        for staging in sorted(staging_root.iterdir()):
            journal_path = staging / JOURNAL
            if journal_path.is_file():
                _apply_journal(dataset, staging, json.loads(journal_path.read_text()))
                done.append(f"finished {staging.name}")
            else:
                shutil.rmtree(staging)
                done.append(f"discarded {staging.name}")
        _remove_if_empty(staging_root)
    for leftover in dataset.root.iterdir():
        if leftover.is_file() and _PARTIAL.match(leftover.name):
            leftover.unlink()
            done.append(f"removed {leftover.name}")
    return done


def recover_dataset(root: Path | str) -> list[str]:
    """Take the lock and finish or discard interrupted changes (see :func:`recover`)."""
    dataset = open_dataset(root, writable=True)
    with dataset_lock(dataset.root):
        return recover(dataset)


def restore_version(root: Path | str, case_id: str, version: int, provenance: dict | None = None) -> dict:
    """Make an archived version current again, as a new version; the version it displaces is archived."""
    dataset = open_dataset(root)
    records = read_manifest(dataset.root)
    old = next((r for r in records if r["case_id"] == case_id and r["version"] == version), None)
    if old is None:
        raise DatasetError(f"Case {case_id} has no version {version}.")
    if old["state"] == "current":
        raise DatasetError(f"Version {version} of case {case_id} is already current.")
    writers = {role: _copier(dataset.root / entry["path"]) for role, entry in old["files"].items()}
    keep = {k: v for k, v in old.items() if k not in _RECORD_KEYS}
    case = CaseVersion(
        case_id, old["split"], writers, old["image_sha256"], {**keep, **(provenance or {}), "restored_from": version}
    )
    return add_case_version(dataset.root, case, replace=True, create=False)


_RECORD_KEYS = {"case_id", "version", "state", "split", "exported_at", "image_sha256", "files", "transaction",
                "archived_at", "superseded_by", "archive_reason", "restored_from"}  # fmt: skip


def _copier(source: Path) -> Callable[[Path], None]:
    def copy(target: Path) -> None:
        shutil.copyfile(source, target)

    return copy


# ---------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------


def dataset_problems(root: Path | str, verify_hashes: bool = True) -> list[str]:
    """Everything in which the files, ``dataset.json`` and the manifest disagree (empty when consistent).

    An unfinished change (a killed export) is reported as such; :func:`recover_dataset` finishes it.
    """
    dataset = open_dataset(root)
    root = dataset.root
    problems = []
    staging = root / STAGING
    if staging.is_dir() and any(staging.iterdir()):
        problems.append(f"unfinished changes in {STAGING}: {', '.join(p.name for p in staging.iterdir())}")
    records = read_manifest(root)
    expected_files = {}
    for record in records:
        for entry in record["files"].values():
            expected_files[entry["path"]] = entry["sha256"]
    for path, digest in expected_files.items():
        if not (root / path).is_file():
            problems.append(f"manifest lists {path}, which is missing")
        elif verify_hashes and sha256_file(root / path) != digest:
            problems.append(f"{path} differs from the manifest's hash")
    on_disk = {
        p.relative_to(root).as_posix()
        for folder in ("imagesTr", "labelsTr", "landmarks", "imagesTs", "labelsTs", "landmarksTs", ARCHIVE)
        if (root / folder).is_dir()
        for p in (root / folder).rglob("*")
        if p.is_file()
    }
    problems += [f"{path} is not in the manifest" for path in sorted(on_disk - set(expected_files))]
    current = current_records(records)
    ids = [r["case_id"] for r in current]
    problems += [f"case {i} has more than one current version" for i in sorted({i for i in ids if ids.count(i) > 1})]
    num_training = _read_dataset_json(root)["numTraining"]
    train = current_records(records, "train")
    labels_tr = list((root / "labelsTr").glob(f"*{dataset.file_ending}")) if (root / "labelsTr").is_dir() else []
    if not num_training == len(train) == len(labels_tr):
        problems.append(
            f"numTraining is {num_training}, the manifest has {len(train)} current training cases and labelsTr "
            f"holds {len(labels_tr)} label files"
        )
    return problems


def content_problems(root: Path | str) -> list[str]:
    """Current cases that an export would refuse today: a CT that ``predict`` refuses (constant, NaN, not 3D)
    or a segmentation that is all background (only exportable with ``allow_empty_segmentation``)."""
    dataset = open_dataset(root)
    problems = []
    for record in current_records(read_manifest(dataset.root)):
        case = record["case_id"]
        image, labels = (dataset.root / record["files"][role]["path"] for role in ("image", "labels"))
        if not (image.is_file() and labels.is_file()):
            continue  # a missing file is dataset_problems' report
        try:
            check_ct_volume(read_ct(image))
        except ValueError as error:
            problems.append(f"case {case}: its CT is not usable for training: {error}")
        if not np.any(sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))):
            problems.append(
                f"case {case}: its segmentation is empty (all background); if that is not intended, export the "
                "corrected segmentation again"
            )
    return problems


def _json_text(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
