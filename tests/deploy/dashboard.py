"""Reading the shipped Grafana dashboard's PromQL (shared by its fast and its end-to-end tests)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "autocanary.json"
ROLLOUT_METRICS = {"autocanary_rollouts", "autocanary_canary_weight", "autocanary_evidence", "autocanary_checks"}
"""Series about rollouts themselves: they must return data while a rollout runs."""


@dataclass(frozen=True)
class Query:
    panel: str
    expr: str
    legend: str

    @property
    def metrics(self) -> set[str]:
        return set(re.findall(r"\bautocanary_[a-z_]+\b", self.expr))

    @property
    def about_rollouts(self) -> bool:
        return bool({m.removesuffix("_threshold") for m in self.metrics} & ROLLOUT_METRICS)

    def with_variables(self, namespace: str = ".*") -> str:
        """As Grafana sends it: `$namespace` replaced by the selection (All is `.*`)."""
        return self.expr.replace("${namespace}", namespace).replace("$namespace", namespace)


def load() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[Query]:
    panels = load()["panels"]
    assert isinstance(panels, list)
    return [
        Query(panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in panels
        for target in panel["targets"]
    ]
