"""An installation's own policies, read from a directory (a mounted ConfigMap) when the API starts.

Each `NAME.yaml` (or `.yml`, `.json`) holds one policy document named after the file; it may
`extends:` a built-in or another site policy. Everything is validated at start-up: a bad file
stops the API with the file and field named, rather than failing the first rollout that uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from policies import InvalidPolicy, SitePolicies, check_site_policies

SUFFIXES = (".yaml", ".yml", ".json")


class SitePolicyError(Exception):
    """The policy directory cannot be used; the message names the file and the reason."""


def read_site_policies(directory: str | Path | None) -> SitePolicies:
    """The directory's policy documents by name, every one resolved and validated."""
    if directory is None:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise SitePolicyError(f"AUTOCANARY_POLICIES_DIR: {root} is not a directory")
    documents: dict[str, dict[str, Any]] = {}
    # Kubernetes mounts a ConfigMap's keys as symlinks next to hidden `..data` directories.
    for path in sorted(p for p in root.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".")):
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SitePolicyError(f"{path}: cannot be read as YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SitePolicyError(f"{path}: a policy file must hold a mapping of fields")
        if path.stem in documents:
            raise SitePolicyError(f"{path}: policy {path.stem!r} is defined by two files")
        documents[path.stem] = loaded
    try:
        check_site_policies(documents)
    except InvalidPolicy as exc:
        raise SitePolicyError(str(exc)) from exc
    return documents
