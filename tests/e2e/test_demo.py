"""`autocanary demo` end to end: API, workers, scheduler, sandbox, Prometheus and Redis as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from sandbox.processes import AUTOCANARY

pytestmark = pytest.mark.slow


def test_the_demo_promotes_rolls_back_and_aborts(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = subprocess.run(  # noqa: S603 (our own command line)
        [AUTOCANARY, "demo", "--summary", str(summary)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "160"},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"web dashboard: http://127\.0\.0\.1:\d+/ui while the demo runs", result.stdout)
    cases = {case["case"]: case for case in json.loads(summary.read_text())}

    promote, rollback, abort = cases["promote"], cases["roll back"], cases["abort"]
    assert promote["phase"] == "succeeded"
    assert promote["events"][:3] == ["created", "started", "step_advanced"]
    assert promote["events"].count("step_advanced") == 4 and promote["events"][-1] == "promoted"

    assert rollback["phase"] == "rolled_back"
    assert rollback["reason"].startswith("errors: canary 5xx")
    assert rollback["events"][-1] == "rolled_back" and "verdict" in rollback["events"]

    assert abort["phase"] == "aborted"
    assert abort["actor"] == "on-call"
    assert "abort" in abort["events"] and abort["events"][-1] == "aborted"
    # The Knative traffic in the sandbox at the end: v2 (promoted) serves everything.
    assert abort["split"] == {"helloworld-go-00002": 100}
    assert rollback["split"] == {"helloworld-go-00002": 100}
    assert promote["split"] == {"helloworld-go-00002": 100}
    tagged = cases["tag first"]
    assert tagged["phase"] == "succeeded", tagged["reason"]
    assert tagged["events"].count("step_advanced") == 2 and tagged["split"] == {"helloworld-go-00005": 100}
    istio = cases["istio promote"]
    assert istio["phase"] == "succeeded", istio["reason"]
    assert istio["events"].count("step_advanced") == 4 and istio["events"][-1] == "promoted"
    assert istio["split"] == {"v2": 100}

    output = result.stdout
    assert "20 requests: Hello Knative! x" in output and "Hello World! x" in output
    assert "by hand, 50/50: 20 requests: Hello reviews v1! x" in output and "Hello reviews v2! x" in output
    assert re.search(
        r"10 requests to the tag URL http://canary-helloworld-go\.default\.example\.com: Hello v5! x10", output
    )
    assert "10 requests to the Service's URL: Hello Knative! x10" in output
    assert "everything it started is stopped" in output


def _processes_started_under(folder: Path) -> dict[int, str]:
    """Live processes (pid: command line) whose environment says a run with TMPDIR `folder` started them."""
    marker = f"TMPDIR={folder}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_a_terminated_demo_stops_everything_it_started(tmp_path: Path) -> None:
    # What `timeout make demo` or a CI runner does: SIGTERM to the demo alone, not its children's groups.
    demo = subprocess.Popen(  # noqa: S603 (our own command line)
        [AUTOCANARY, "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "160"},
    )
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if "are up" in line:
                break
        assert any("are up" in line for line in seen), "".join(seen)
        assert len(_processes_started_under(tmp_path)) >= 6  # sandbox, Prometheus, Redis, API, workers, scheduler
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 128 + signal.SIGTERM
        assert _processes_started_under(tmp_path) == {}
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in _processes_started_under(tmp_path):  # a failed run must not leave them to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
