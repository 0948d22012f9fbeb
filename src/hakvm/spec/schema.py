"""JSON Schema of the spec, for editors (yaml-language-server) and CI linters."""

from __future__ import annotations

from typing import Any

from hakvm.spec.models import ClusterSpec


def json_schema() -> dict[str, Any]:
    schema = ClusterSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hakvm cluster spec"
    return schema
