"""The one background-run protocol of the three modules: long work in a worker process, polled from a QTimer.

Why a process: inside Slicer, PythonQt never releases the GIL while Qt idles, so a Python thread
advances only during Python callbacks. A subprocess runs at full speed, and Cancel can always stop it.

Client side (Slicer or tests), :class:`BackgroundRun`::

    run = BackgroundRun("SternumSSMLib.segmentation_worker", ["--model", folder])
    request_id = run.send({"image": "ct.nrrd", ...})  # starts the worker on first use
    for message in run.poll():                         # never blocks; call it from a QTimer
        ...
    run.cancel()                                        # kills the worker's whole process tree
    run.close()                                         # ends an idle worker politely

Messages are dicts, the same shapes for every worker (a worker may add fields; ``id`` is the
request id that :meth:`BackgroundRun.send` returned):

- ``{"event": "ready", ...}``: the worker finished loading (e.g. its model); informational;
- ``{"event": "progress", "id": int, "fraction": float in [0, 1], "text": str}``;
- ``{"event": "done", "id": int, ...result fields}``;
- ``{"event": "error", "id": int | None, "message": str}``: the request failed, or the worker
  process stopped unexpectedly (``id`` None; the message ends with its last stderr lines);
- ``{"event": "cancelled", "id": int}``: made by :meth:`BackgroundRun.cancel` for a request that was
  still running; nothing else of that worker arrives afterwards.

Exactly one of done / error / cancelled ends each request.

Worker side: a module run as ``python -m <module>`` calls :func:`serve` with a ``load`` function
that loads what the worker needs once and returns ``(handle, ready_fields)``; ``handle(request,
progress)`` turns one request into the fields of its ``done`` message. Requests are JSON lines on stdin;
messages are JSON lines on the worker's real stdout. :func:`serve` moves file descriptor 1 to stderr
first, so a library that prints (nnU-Net does) cannot corrupt the protocol.

Portability (Slicer on Windows, macOS, Linux): the worker starts with ``sys.executable`` (PythonSlicer
inside Slicer) and without a console window on Windows (``CREATE_NO_WINDOW``, as
``slicer.util.launchConsoleProcess`` does). Its stderr goes to an anonymous temporary file, not a
pipe: a file never fills, so any amount of warnings cannot deadlock it, and it vanishes when closed.
Cancel kills the process tree with ``psutil``; ``os.killpg`` does not exist on Windows, and
PythonSlicer is a launcher whose child does the work.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

LIB_PARENT = Path(__file__).resolve().parents[1]
STDERR_TAIL_LINES = 8

Progress = Callable[[float, str], None]
Handler = Callable[[dict, Progress], dict]


def popen_options(platform: str = sys.platform) -> dict[str, Any]:
    """Platform options of the worker's ``subprocess.Popen``: no console window on Windows."""
    if platform == "win32":
        return {"creationflags": subprocess.CREATE_NO_WINDOW}
    return {}


def kill_process_tree(pid: int) -> None:
    """Kill ``pid`` and every process it started, on any platform; a process already gone is fine."""
    import psutil  # first use in Slicer installs it with the module's other packages

    try:
        parent = psutil.Process(pid)
        # Listed before the parent dies: afterwards its orphans no longer point back to it.
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for process in [parent, *children]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs([parent, *children], timeout=10)


class BackgroundRun:
    """Client of one worker process: send requests, poll messages, cancel. Qt-free.

    ``module`` is run as ``python -m module args...``; ``package_parents`` are the folders that hold
    the packages the worker imports (default: the folder holding ``SternumSSMLib``).
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        package_parents: Sequence[Path | str] = (LIB_PARENT,),
        python: str | None = None,
    ) -> None:
        self.command = [python or sys.executable, "-m", module, *map(str, args)]
        self.package_parents = [str(path) for path in package_parents]
        self.process: subprocess.Popen | None = None
        self._messages: queue.Queue = queue.Queue()
        self._client_messages: list[dict] = []
        self._in_flight: set[int] = set()
        self._ids = itertools.count(1)

    @property
    def running(self) -> bool:
        """True while the worker process is alive (busy or idle with its model loaded)."""
        return self.process is not None and self.process.poll() is None

    @property
    def busy(self) -> bool:
        """True while a request has not yet ended with done, error or cancelled."""
        return bool(self._in_flight)

    def _start(self) -> None:
        python_path = [*self.package_parents, os.environ.get("PYTHONPATH", "")]
        environment = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, python_path))}
        stderr_log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - the reader thread closes it
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_log,
            env=environment,
            **popen_options(),
        )
        # A queue and request set per process: what a cancelled worker still wrote never reaches the next one's client.
        self._messages, self._in_flight = queue.Queue(), set()
        threading.Thread(
            target=self._read, args=(self.process, self._messages, stderr_log, self._in_flight), daemon=True
        ).start()

    @staticmethod
    def _read(process: subprocess.Popen, messages: queue.Queue, stderr_log: IO[bytes], in_flight: set[int]) -> None:
        with stderr_log:
            for raw in process.stdout:
                try:
                    messages.put(json.loads(raw.decode("utf-8", errors="replace")))
                except json.JSONDecodeError:
                    continue  # not a protocol line; the worker's own output goes to stderr
            returncode = process.wait()
            if returncode == 0 and not in_flight:
                return
            stderr_log.seek(0)
            tail = stderr_log.read().decode("utf-8", errors="replace").strip().splitlines()[-STDERR_TAIL_LINES:]
        messages.put(
            {
                "event": "error",
                "id": None,
                "returncode": returncode,
                "message": f"The worker process stopped (exit code {returncode}).\n" + "\n".join(tail),
            }
        )

    def send(self, request: dict) -> int:
        """Hand one request to the worker (started now if it is not running); returns its id."""
        if not self.running:
            self._start()
        request_id = next(self._ids)
        self._in_flight.add(request_id)
        self.process.stdin.write((json.dumps({**request, "id": request_id}) + "\n").encode("utf-8"))
        self.process.stdin.flush()
        return request_id

    def poll(self) -> list[dict]:
        """Every message received since the last call; never blocks."""
        received, self._client_messages = self._client_messages, []
        while True:
            try:
                received.append(self._messages.get_nowait())
            except queue.Empty:
                break
        for message in received:
            if message["event"] in ("done", "error", "cancelled"):
                if message.get("id") is None:
                    self._in_flight.clear()  # the worker died: nothing it had will end
                self._in_flight.discard(message.get("id"))
        return received

    def cancel(self) -> None:
        """Kill the worker and everything it started; each running request ends as ``cancelled``.
        Whatever the worker had loaded is lost; the next :meth:`send` starts a fresh one."""
        if self.process is not None:
            if self.running:
                kill_process_tree(self.process.pid)
            self.process.wait()
            self.process.stdin.close()
        self.process = None
        self._messages = queue.Queue()
        self._client_messages += [{"event": "cancelled", "id": i} for i in sorted(self._in_flight)]

    def close(self, timeout: float = 10.0) -> None:
        """End the worker by closing its stdin; kill it if it does not stop within ``timeout`` s."""
        if self.running:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.cancel()
        self.process = None


def claim_protocol_stdout() -> IO[str]:
    """Worker side: the stream for protocol lines; file descriptor 1 (``print``, C libraries) now
    goes to stderr, so nothing else can land between the JSON lines."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    return protocol


def serve(load: Callable[[], tuple[Handler, dict]]) -> int:
    """Worker side: ``load()`` once (its output already off the protocol) and send its ready fields;
    then answer each JSON-line request on stdin with ``handle(request, progress)``'s result as a
    ``done`` message, or an ``error``, until stdin closes. ``progress(fraction, text)`` reports on the
    current request. A failing ``load`` ends the worker; the client reports its stderr."""
    protocol = claim_protocol_stdout()

    def emit(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    handle, ready = load()
    emit({"event": "ready", **ready})
    for line in sys.stdin:
        request = json.loads(line)
        request_id = request["id"]

        def progress(fraction: float, text: str, request_id: int = request_id) -> None:
            emit({"event": "progress", "id": request_id, "fraction": float(fraction), "text": text})

        try:
            result = handle(request, progress)
        except Exception as error:  # every failure goes back to the client as a message
            traceback.print_exc()  # the full trace lands in the worker's stderr
            emit({"event": "error", "id": request_id, "message": f"{type(error).__name__}: {error}"})
            continue
        emit({"event": "done", "id": request_id, **result})
    return 0
