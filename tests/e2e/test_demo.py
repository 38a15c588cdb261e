"""`autocanary demo` end to end: API, workers, scheduler, sandbox, Prometheus and Redis as real processes."""

from __future__ import annotations

import json
import os
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

    output = result.stdout
    assert "20 requests: Hello Knative! x" in output and "Hello World! x" in output
    assert "everything it started is stopped" in output
