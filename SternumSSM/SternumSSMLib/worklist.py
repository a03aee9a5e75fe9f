"""The annotators' worklist over a batch output folder: which predicted case needs a human most, and who has it.

Ranking. Cases leave the list once the dataset holds them (a current case with the same id or
the same image hash). The rest are ordered by tier, then by score, highest first:

- tier 0: a QA error (no sternum, a class missing); tier 1: QA warnings only; tier 2: no QA flag;
- score = 0.5 * uncertain share + 0.5 * (1 - mean landmark confidence), in [0, 1], where the uncertain
  share is the predicted structure's voxels whose top class probability is below 0.95
  (``uncertain_fraction`` of :func:`batch_case.uncertainty_summary`), and unplaced landmarks count
  with confidence 0.

Claims. ``claims/<case>.json`` holds the annotator and the time of the claim. A claim stops other
annotators from taking the case; it goes stale after ``stale_after_s`` (then anyone may take the
case over), and its holder renews it by claiming again. Claims change under a lock on the claims
folder, so two annotators can never both get one case. This module is Qt-free: the Slicer module's
Worklist section and ``sternum-ssm worklist`` both call it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .atomic import write_text_atomic
from .batch import read_sources
from .batch_case import output_paths
from .dataset import current_records, dataset_lock, read_manifest, utc_now

CLAIMS = "claims"
WORKLIST = "worklist.json"
STALE_AFTER_S = 4 * 3600.0
TIER_NAMES = ("QA error", "QA warning", "no QA flag")


class CaseClaimedError(PermissionError):
    """Another annotator holds a live claim on the case (the command line reports it as a refusal)."""


@dataclass(frozen=True)
class WorklistEntry:
    rank: int
    case_id: str
    tier: int
    score: float
    reasons: tuple[str, ...]
    claimed_by: str | None = None


@dataclass(frozen=True)
class Claim:
    case_id: str
    annotator: str
    claimed_at: str
    token: str


def predicted_cases(batch: Path | str) -> dict[str, dict]:
    """Case id -> the ``<case>.json`` record of every case the batch committed."""
    records = {}
    for segmentation in sorted(Path(batch).glob("*.seg.nrrd")):
        case_id = segmentation.name.removesuffix(".seg.nrrd")
        record_path = output_paths(Path(batch), case_id)[".json"]
        if record_path.is_file():
            records[case_id] = json.loads(record_path.read_text())
    return records


def exported_records(dataset: Path | str | None, predicted: dict[str, dict]) -> dict[str, dict]:
    """Batch case id -> the dataset's current record of that case (same id, or same image hash)."""
    if dataset is None or not (Path(dataset) / "manifest.jsonl").is_file():
        return {}
    by_hash = {record.get("image_sha256"): case_id for case_id, record in predicted.items()}
    exported = {}
    for record in current_records(read_manifest(dataset)):
        case_id = record["case_id"] if record["case_id"] in predicted else by_hash.get(record["image_sha256"])
        if case_id is not None:
            exported[case_id] = record
    return exported


def need_score(record: dict) -> float:
    """The documented score (module docstring): higher means an annotator is needed more."""
    uncertain = float(record["uncertainty"]["uncertain_fraction"])
    confidence = float(record["landmarks"]["mean_confidence"])
    return round(0.5 * uncertain + 0.5 * (1.0 - confidence), 4)


def _tier(record: dict) -> int:
    severities = {flag["severity"] for flag in record.get("qa_flags", [])}
    return 0 if "error" in severities else 1 if severities else 2


def _reasons(record: dict) -> tuple[str, ...]:
    reasons = [flag["message"] for flag in record.get("qa_flags", [])]
    uncertainty, landmarks = record["uncertainty"], record["landmarks"]
    reasons.append(
        f"{uncertainty['uncertain_fraction']:.0%} of the structure uncertain ({uncertainty['uncertain_ml']:.1f} ml)"
    )
    reasons.append(f"mean landmark confidence {landmarks['mean_confidence']:.2f}, {landmarks['placed']} placed")
    if landmarks["flags"]:
        reasons.append(f"{len(landmarks['flags'])} landmark flag(s), first: {landmarks['flags'][0]}")
    return tuple(reasons)


def rank_cases(
    batch: Path | str, dataset: Path | str | None = None, stale_after_s: float = STALE_AFTER_S
) -> list[WorklistEntry]:
    """Predicted cases not yet in the dataset, the case most in need of an annotator first."""
    predicted = predicted_cases(batch)
    exported = exported_records(dataset, predicted)
    claims = live_claims(batch, stale_after_s)
    waiting = [(case_id, record) for case_id, record in predicted.items() if case_id not in exported]
    waiting.sort(key=lambda item: (_tier(item[1]), -need_score(item[1]), item[0]))
    return [
        WorklistEntry(
            rank, case_id, _tier(record), need_score(record), _reasons(record),
            claims[case_id].annotator if case_id in claims else None,
        )
        for rank, (case_id, record) in enumerate(waiting, start=1)
    ]  # fmt: skip


def write_worklist(batch: Path | str, dataset: Path | str | None = None) -> tuple[Path, list[WorklistEntry]]:
    """``worklist.json`` in the batch folder: the ranking with each case's reasons."""
    entries = rank_cases(batch, dataset)
    document = {
        "written_at": utc_now(),
        "dataset": None if dataset is None else str(Path(dataset).absolute()),
        "order": "tier (0 QA error, 1 QA warning, 2 no flag), then score, highest first",
        "score": "0.5 * uncertain share of the structure + 0.5 * (1 - mean landmark confidence)",
        "cases": [asdict(entry) for entry in entries],
    }
    path = write_text_atomic(Path(batch) / WORKLIST, json.dumps(document, indent=1) + "\n", overwrite=True)
    return path, entries


def worklist_text(entries: list[WorklistEntry]) -> str:
    lines = [f"{'rank':>4}  {'case':<16} {'tier':<11} {'score':>5}  {'claimed by':<12} reasons"]
    for entry in entries:
        lines.append(
            f"{entry.rank:>4}  {entry.case_id:<16} {TIER_NAMES[entry.tier]:<11} {entry.score:>5.3f}  "
            f"{entry.claimed_by or '-':<12} {'; '.join(entry.reasons)}"
        )
    return "\n".join(lines)


def _claim_path(batch: Path | str, case_id: str) -> Path:
    return Path(batch) / CLAIMS / f"{case_id}.json"


def _read_claim(path: Path) -> Claim | None:
    return Claim(**json.loads(path.read_text())) if path.is_file() else None


def _age_s(claim: Claim) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(claim.claimed_at)).total_seconds()


def live_claims(batch: Path | str, stale_after_s: float = STALE_AFTER_S) -> dict[str, Claim]:
    """Case id -> its claim, for claims younger than ``stale_after_s``."""
    claims = (_read_claim(path) for path in sorted((Path(batch) / CLAIMS).glob("*.json")))
    return {claim.case_id: claim for claim in claims if claim is not None and _age_s(claim) < stale_after_s}


def claim_case(batch: Path | str, case_id: str, annotator: str, stale_after_s: float = STALE_AFTER_S) -> Claim:
    """Claim (or renew one's own claim on) a predicted case; another annotator's live claim refuses it."""
    if not annotator.strip():
        raise ValueError("Give the annotator's name: a claim tells the others who has the case.")
    if not output_paths(Path(batch), case_id)[".json"].is_file():
        raise ValueError(f"Case {case_id!r} has no committed prediction in {batch}.")
    folder = Path(batch) / CLAIMS
    folder.mkdir(exist_ok=True)
    with dataset_lock(folder, timeout_s=10.0):
        held = _read_claim(_claim_path(batch, case_id))
        if held is not None and held.annotator != annotator and _age_s(held) < stale_after_s:
            raise CaseClaimedError(
                f"Case {case_id} is claimed by {held.annotator} since {held.claimed_at}; choose another case."
            )
        claim = Claim(case_id, annotator, utc_now(), uuid.uuid4().hex)
        write_text_atomic(_claim_path(batch, case_id), json.dumps(asdict(claim)) + "\n", overwrite=True)
    return claim


def claim_next(
    batch: Path | str, dataset: Path | str | None, annotator: str, stale_after_s: float = STALE_AFTER_S
) -> Claim | None:
    """The annotator's own open case if there is one, else a claim on the highest-ranked unclaimed case."""
    entries = rank_cases(batch, dataset, stale_after_s)
    ordered = [e for e in entries if e.claimed_by == annotator] + [e for e in entries if e.claimed_by is None]
    for entry in ordered:
        try:
            return claim_case(batch, entry.case_id, annotator, stale_after_s)
        except CaseClaimedError:
            continue  # taken meanwhile by someone else
    return None


def release(batch: Path | str, claim: Claim) -> bool:
    """Give a case back; False when the claim was no longer this one (it went stale and was taken over)."""
    with dataset_lock(Path(batch) / CLAIMS, timeout_s=10.0):
        held = _read_claim(_claim_path(batch, claim.case_id))
        if held is None or held.token != claim.token:
            return False
        _claim_path(batch, claim.case_id).unlink()
    return True


def case_files(batch: Path | str, case_id: str) -> dict[str, Path | str | None]:
    """What the Slicer module loads for a case: the CT (from the batch's private index), the prediction files
    and, for a DICOM folder holding several series, the series UID."""
    source = read_sources(batch).get(case_id)
    if source is None:
        raise ValueError(f"Case {case_id!r} is not in {Path(batch) / 'sources.private.json'}.")
    paths = output_paths(Path(batch), case_id)
    return {
        "ct": Path(source["source"]),
        "series_uid": source.get("series_uid"),
        "segmentation": paths[".seg.nrrd"],
        "markups": paths[".mrk.json"],
        "csv": paths[".csv"],
        "record": paths[".json"],
    }


def pipeline_counts(batch: Path | str, dataset: Path | str | None) -> dict[str, int]:
    """Cases predicted, claimed (live claims, not yet exported), corrected (exported with the correction
    measured against the prediction) and exported, for ``dataset-summary``."""
    predicted = predicted_cases(batch)
    exported = exported_records(dataset, predicted)
    claimed = set(live_claims(batch)) - set(exported)
    corrected = [
        r for r in exported.values() if any((r.get("correction") or {}).get(k) for k in ("segmentation", "landmarks"))
    ]
    return {
        "predicted": len(predicted),
        "claimed": len(claimed),
        "corrected": len(corrected),
        "exported": len(exported),
    }


def pipeline_text(counts: dict[str, int]) -> str:
    return "Batch: " + ", ".join(f"{count} {name}" for name, count in counts.items()) + "."
