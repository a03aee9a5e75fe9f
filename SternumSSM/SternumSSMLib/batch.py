"""Batch prediction on a Dask distributed cluster: every CT through the whole per-case pipeline.

The engine is Dask's: a scheduler hands each case (one task, :func:`batch_case.run_case`) to a
worker process, re-runs a case on another worker when its worker dies, and gives up with
``KilledWorker`` after ``distributed.scheduler.allowed-failures`` deaths (a case that kills
every worker, e.g. by running out of memory, is then recorded as failed). Without ``address``
a ``LocalCluster`` on this machine has one single-threaded worker process per core; with it the
batch joins an existing scheduler, whose workers must see the CTs and the output folder at the
same paths.

The output folder holds, per case, the four files of :mod:`batch_case` and:

- ``manifest.jsonl``: one line per case per run: ``done``, ``failed`` (with the error) or ``skipped``;
  only this process appends to it. The files are the truth: a case with ``<case>.json`` is done.
- ``sources.private.json``: case id -> CT path, for the worklist to open the CT. It is the only file
  that names inputs (paths can name patients): keep it with the CTs, never share it.

A rerun skips done cases and, unless asked to retry them, failed ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import fsync_file, write_text_atomic
from .batch_case import STAGING, CaseJob, CaseSteps, error_text, is_committed, run_case
from .dataset import check_case_id, dataset_lock, utc_now
from .image_files import case_id_of, ct_files

MANIFEST = "manifest.jsonl"
SOURCES = "sources.private.json"


def available_cores() -> int:
    """Cores this process may use (the affinity mask in containers and batch jobs)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_list_files(lists: list[str]) -> list[str]:
    """Entries of text files with one CT path per line; blank lines and '#' comments are skipped."""
    entries = []
    for name in lists:
        for line in Path(name).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append(line.strip())
    return entries


def plan_jobs(
    inputs: list[str],
    output: Path | str,
    lists: list[str] | None = None,
    case_prefix: str | None = None,
    series_uid: str | None = None,
) -> list[CaseJob]:
    """One job per CT from folders, files and DICOM series folders (checked now) and list files (entries
    are checked by the worker, so a missing one fails alone).

    Case ids are the file or folder names, or with ``case_prefix`` ``<prefix>_0001``... in input
    order; a CT planned before keeps its number (from ``sources.private.json``)."""
    sources = [str(path.absolute()) for path in ct_files(inputs)] if inputs else []
    sources += [str(Path(entry).absolute()) for entry in read_list_files(lists or [])]
    sources = list(dict.fromkeys(sources))
    if not sources:
        raise FileNotFoundError("No CTs to predict: give folders, files, DICOM series folders or --list files.")
    if case_prefix is None:
        ids = [case_id_of(Path(source)) for source in sources]
        bad = [name for name in ids if not _valid_case_id(name)]
        if bad:
            raise ValueError(
                f"{len(bad)} input names are not usable case ids (letters, digits, '-', '_'): "
                f"{', '.join(bad[:4])}. Use --case-prefix to number the cases instead."
            )
    else:
        check_case_id(f"{case_prefix}_0001")
        ids = _numbered_ids(sources, case_prefix, read_sources(output))
    duplicates = sorted(name for name, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(
            f"Several inputs would share the case id(s) {', '.join(duplicates[:4])}; "
            "use --case-prefix to number the cases instead."
        )
    return [CaseJob(case_id, source, series_uid) for case_id, source in zip(ids, sources, strict=True)]


def _valid_case_id(name: str) -> bool:
    try:
        check_case_id(name)
    except ValueError:
        return False
    return True


def _numbered_ids(sources: list[str], prefix: str, known: dict[str, dict]) -> list[str]:
    by_source = {entry["source"]: case_id for case_id, entry in known.items()}
    numbers = [int(case_id.rsplit("_", 1)[1]) for case_id in known if case_id.rsplit("_", 1)[0] == prefix]
    next_number = max(numbers, default=0) + 1
    ids = []
    for source in sources:
        if source not in by_source:
            by_source[source] = f"{prefix}_{next_number:04d}"
            next_number += 1
        ids.append(by_source[source])
    return ids


def read_sources(output: Path | str) -> dict[str, dict]:
    """Case id -> {"source": CT path, "series_uid": ...} of every case planned into ``output``."""
    path = Path(output) / SOURCES
    return json.loads(path.read_text()) if path.is_file() else {}


def read_batch_manifest(output: Path | str) -> list[dict]:
    """Every line of the run manifest; a last line cut short by a crash is ignored."""
    path = Path(output) / MANIFEST
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                raise ValueError(f"{path}, line {number} is not valid JSON; the manifest is corrupt.") from None
    return records


def _append(path: Path, record: dict) -> None:
    """One manifest line, flushed to disk before the next case is reported."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    fsync_file(path)


@dataclass
class BatchReport:
    """This run's manifest lines and how long it took."""

    run: str
    records: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    workers: int = 0

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.records)

    @property
    def model_loads(self) -> int:
        return sum(len(record.get("models_loaded", [])) for record in self.records)

    def table(self) -> str:
        """The final summary: counts, throughput, model loads, and each failed case with its error."""
        computed = sum(record["status"] != "skipped" for record in self.records)
        rate = 60.0 * computed / self.wall_seconds if self.wall_seconds > 0 else 0.0
        lines = [
            f"{'status':<8} {'cases':>6}",
            *(f"{status:<8} {self.count(status):>6}" for status in ("done", "failed", "skipped")),
            f"{len(self.records)} cases in {self.wall_seconds:.1f} s on {self.workers} worker(s): "
            f"{rate:.1f} cases/min; models loaded {self.model_loads} time(s)",
        ]
        failed = [record for record in self.records if record["status"] == "failed"]
        lines += [f"failed {record['case_id']}: {record['error']}" for record in failed]
        return "\n".join(lines)


@contextlib.contextmanager
def dask_client(address: str | None = None, workers: int | None = None):
    """A client of the scheduler at ``address``, or of a new local cluster of ``workers`` processes."""
    import dask
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then hands freed memory back at once and
    # maps it again for the next tile, which made each case ~1.6x slower here (bench_batch.py); glibc's own
    # adaptive threshold is kept instead. Workers also sample their stacks every 10 ms for a dashboard that
    # the batch does not start. The nanny applies both to the worker processes it spawns (None unsets).
    settings = {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.worker.profile.enabled": False,
    }
    with (
        dask.config.set(settings),
        LocalCluster(
            n_workers=workers or available_cores(), threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_batch(
    jobs: list[CaseJob],
    steps: CaseSteps,
    output: Path | str,
    address: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    show_progress: bool = True,
) -> BatchReport:
    """Predict every job not done yet on the cluster; each case's outcome goes to the manifest as it arrives."""
    output = Path(output).absolute()
    output.mkdir(parents=True, exist_ok=True)
    report = BatchReport(run=f"{utc_now()}-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(dataset_lock(output, timeout_s=1.0))
        except TimeoutError:
            raise TimeoutError(f"Another batch is writing to {output}; wait for it or choose another output.") from None
        shutil.rmtree(output / STAGING, ignore_errors=True)  # left by workers killed in an earlier run
        sources = _sources_text(output, jobs)
        if not (output / SOURCES).is_file() or (output / SOURCES).read_text() != sources:
            write_text_atomic(output / SOURCES, sources, overwrite=True)
        pending = _skip_finished(jobs, output, retry_failed, report)
        if pending:
            _run_on_cluster(pending, steps, output, address, workers, show_progress, report)
        shutil.rmtree(output / STAGING, ignore_errors=True)
    report.wall_seconds = time.perf_counter() - started
    return report


def _sources_text(output: Path, jobs: list[CaseJob]) -> str:
    sources = read_sources(output) | {job.case_id: {"source": job.source, "series_uid": job.series_uid} for job in jobs}
    return json.dumps(sources, indent=1, sort_keys=True) + "\n"


def _skip_finished(jobs: list[CaseJob], output: Path, retry_failed: bool, report: BatchReport) -> list[CaseJob]:
    """Record done and (without ``retry_failed``) failed cases as skipped; return the rest."""
    last = {record["case_id"]: record for record in read_batch_manifest(output) if record["status"] != "skipped"}
    pending = []
    for job in jobs:
        previous = last.get(job.case_id)
        if is_committed(output, job.case_id):
            note = "done in an earlier run" if previous and previous["status"] == "done" else "found committed"
            _record(output, report, {"case_id": job.case_id, "status": "skipped", "note": note})
        elif previous and previous["status"] == "failed" and not retry_failed:
            note = f"failed in an earlier run ({previous['error']}); retry with --retry-failed"
            _record(output, report, {"case_id": job.case_id, "status": "skipped", "note": note})
        else:
            pending.append(job)
    return pending


def _record(output: Path, report: BatchReport, result: dict) -> None:
    record = {"run": report.run, "at": utc_now(), **result}
    _append(output / MANIFEST, record)
    report.records.append(record)


def _run_on_cluster(
    jobs: list[CaseJob],
    steps: CaseSteps,
    output: Path,
    address: str | None,
    workers: int | None,
    show_progress: bool,
    report: BatchReport,
) -> None:
    from distributed import as_completed
    from tqdm import tqdm

    with dask_client(address, workers) as client:
        report.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        futures = {
            client.submit(run_case, job, steps, str(output), key=f"{job.case_id}-{report.run}", pure=False): job
            for job in jobs
        }
        started, counts = time.perf_counter(), Counter()
        with tqdm(total=len(jobs), unit="case", disable=not show_progress) as bar:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except Exception as error:  # the task never returned: its workers died (KilledWorker) or it was lost
                    result = {"case_id": job.case_id, "status": "failed", "error": _lost_task_text(error, job)}
                _record(output, report, result)
                counts[result["status"]] += 1
                rate = 60.0 * bar.n / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(done=counts["done"], failed=counts["failed"], per_min=f"{rate:.1f}")
                bar.update()


def _lost_task_text(error: BaseException, job: CaseJob) -> str:
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        return (
            "KilledWorker: each worker that ran this case died (out of memory, or killed), so the scheduler "
            "gave it up; the other cases went on. Retry it with --retry-failed, on workers with more memory."
        )
    return error_text(error, job)
