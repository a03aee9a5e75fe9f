"""The shared background-run protocol: message shapes, stderr that cannot deadlock, process-tree cancel,
a worker that dies, and the Windows start options."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
from SternumSSMLib.background_run import LIB_PARENT, BackgroundRun, popen_options

TESTING = Path(__file__).resolve().parent


def child() -> BackgroundRun:
    return BackgroundRun("background_child", package_parents=[TESTING, LIB_PARENT])


def wait_until_ended(run: BackgroundRun, timeout: float = 60.0) -> list[dict]:
    """Every message until one that ends a request (done, error, cancelled)."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += run.poll()
        if seen and seen[-1]["event"] in ("done", "error", "cancelled"):
            return seen
        time.sleep(0.02)
    raise TimeoutError(f"No end of request within {timeout} s; saw {seen}")


def test_messages_have_the_shared_shapes_and_stray_prints_stay_out():
    run = child()
    try:
        request_id = run.send({"sleep": 0.0})
        assert run.busy
        seen = wait_until_ended(run)
        assert [m["event"] for m in seen] == ["ready", "progress", "done"]
        assert seen[1] == {"event": "progress", "id": request_id, "fraction": 0.5, "text": "half way"}
        assert seen[2] == {"event": "done", "id": request_id}
        assert not run.busy
        failing = run.send({"fail": "bad input"})
        assert wait_until_ended(run)[-1] == {"event": "error", "id": failing, "message": "ValueError: bad input"}
        assert run.running  # a failed request leaves the worker serving
    finally:
        run.close()
    assert not run.running


def test_a_megabyte_of_warnings_does_not_block_the_worker():
    """The old client read stderr only after stdout closed: past ~64 KiB the worker hung on write."""
    run = child()
    try:
        run.send({"stderr_kib": 1024})
        assert wait_until_ended(run, timeout=30)[-1]["event"] == "done"
    finally:
        run.close()


def test_cancel_kills_the_whole_tree_and_ends_the_request_as_cancelled():
    run = child()
    try:
        request_id = run.send({"spawn": True, "sleep": 600})
        deadline = time.monotonic() + 30
        while not any(m["event"] == "progress" for m in run.poll()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        worker = psutil.Process(run.process.pid)
        family = [worker, *worker.children(recursive=True)]
        assert len(family) == 2
        run.cancel()
        assert run.poll() == [{"event": "cancelled", "id": request_id}]
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)
        assert not run.running and not run.busy
        run.cancel()  # nothing running: no second message
        assert run.poll() == []
        again = run.send({"sleep": 0.0})  # a fresh worker
        assert wait_until_ended(run)[-1] == {"event": "done", "id": again}
    finally:
        run.close()


def test_a_dying_worker_ends_the_request_with_its_last_stderr_lines():
    run = child()
    run.send({"exit": 3})
    message = wait_until_ended(run)[-1]
    assert message["event"] == "error" and message["returncode"] == 3
    assert "exit code 3" in message["message"] and "dying on purpose" in message["message"]
    assert not run.busy


def test_the_worker_starts_without_a_console_window_on_windows(monkeypatch):
    monkeypatch.setattr(subprocess, "CREATE_NO_WINDOW", 0x08000000, raising=False)
    assert popen_options("win32") == {"creationflags": 0x08000000}
    assert popen_options("linux") == {} and popen_options("darwin") == {}
