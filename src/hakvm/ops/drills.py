"""Drill results kept where `hakvm drill` ran, for `hakvm serve`'s timeline: one JSON file per
scenario run in `$HAKVM_STATE_DIR/<cluster>/drills/` (beside the cluster's secrets), named
`<finished, UTC>-<scenario>.json`:

    {"format": 1, "scenario": "node-crash", "passed": true, "recovery_s": 68.5,
     "started": 1764150000.0, "finished": 1764150120.0, "timeline": [...], ...}

`started` and `finished` are Unix seconds; the rest is `hakvm drill --json`'s object.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hakvm.deploy.secrets import state_dir

FORMAT = 1
KEEP_READ = 100  # the newest files read
MAX_BYTES = 1024 * 1024
_SCENARIO_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class DrillRecord(BaseModel):
    format: int = FORMAT
    scenario: str
    passed: bool
    recovery_s: float | None = None
    started: float
    finished: float


def drills_dir(cluster: str) -> Path:
    return state_dir(cluster) / "drills"


def record(cluster: str, result: dict[str, Any], started: float, finished: float) -> Path:
    """Keep one drill's result (`DrillResult.as_dict()`); the file's path. OSError if the
    state directory cannot be written."""
    scenario = str(result.get("scenario", ""))
    if not _SCENARIO_RE.match(scenario):
        raise ValueError(f"not a scenario name: {scenario!r}")
    directory = drills_dir(cluster)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(finished))
    path = directory / f"{stamp}-{scenario}.json"
    data = {"format": FORMAT, **result, "started": started, "finished": finished}
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, path)
    return path


def records(cluster: str, keep: int = KEEP_READ) -> list[DrillRecord]:
    """The newest `keep` drill results, oldest first; unreadable files are skipped."""
    try:
        names = sorted(p for p in drills_dir(cluster).glob("*.json") if p.is_file())
    except OSError:
        return []
    out: list[DrillRecord] = []
    for path in names[-keep:]:
        try:
            if path.stat().st_size > MAX_BYTES:
                continue
            out.append(DrillRecord.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError):
            continue
    return out
