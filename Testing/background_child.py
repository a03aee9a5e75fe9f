"""A tiny worker on the background-run protocol, for tests of the protocol itself (no model needed).

Requests: {"sleep": s} waits; {"stderr_kib": n} writes n KiB of warnings first; {"spawn": True}
starts a grandchild that sleeps and reports its pid; {"fail": text} raises; {"exit": code} dies.
"""

from __future__ import annotations

import subprocess
import sys
import time

from SternumSSMLib.background_run import Progress, serve


def handle(request: dict, progress: Progress) -> dict:
    print("a library printing to stdout")  # must not corrupt the protocol
    sys.stderr.write("warning: noisy library\n" * (request.get("stderr_kib", 0) * 1024 // 23 + 1))
    if "exit" in request:
        sys.stderr.write("dying on purpose\n")
        sys.stderr.flush()
        sys.exit(request["exit"])
    if "fail" in request:
        raise ValueError(request["fail"])
    result = {}
    if request.get("spawn"):
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        result["grandchild"] = grandchild.pid
    progress(0.5, "half way")
    time.sleep(request.get("sleep", 0.0))
    return result


if __name__ == "__main__":
    sys.exit(serve(lambda: (handle, {"pid_ready": True})))
