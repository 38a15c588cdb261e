"""Keeps bench/RESULTS.md as one section per benchmark, each rewritten in place by its script."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

HEADER = "# Benchmark results\n\nWritten by the scripts in `bench/`; each section is replaced when its script runs.\n"


def write_section(path: Path, key: str, title: str, note: str, body: str) -> None:
    text = path.read_text() if path.exists() else HEADER
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"<!-- {key}:start -->\n## {title}\n\n{stamp}. {note}\n\n{body}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
