"""The example specs as render tests start from them: raw data to adjust, then a context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hakvm.render.base import RenderContext, Secrets
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_data(example: str, **cluster: Any) -> dict[str, Any]:
    """examples/<example>.yaml as plain data, `cluster` fields replaced."""
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    data["cluster"].update(cluster)
    return data


def render_context(data: dict[str, Any]) -> RenderContext:
    """A context with redacted secrets: what every renderer test but the secret ones needs."""
    spec = ClusterSpec.model_validate(data)
    return RenderContext(spec, derive(spec), Secrets.redacted())
