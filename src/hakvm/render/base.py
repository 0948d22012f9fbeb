"""Shared types for renderers: pure functions from (spec, derived, secrets) to files."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cache

import jinja2

from hakvm.redact import GENERATED
from hakvm.spec.derive import Derived
from hakvm.spec.models import ClusterSpec

# The pseudo-node holding cluster-wide artefacts (the CIB, the pcs/crmsh exports): they are
# not files on a node but state pushed to Pacemaker.
CLUSTER = "cluster"
# Where a secret goes in a file rendered without secrets; never written to a node
# (hakvm.redact.contains_placeholder is checked where files are written).
REDACTED = GENERATED
# The first line of the files hakvm owns whole (corosync.conf, each DRBD resource file):
# apply treats such a file on a node as hakvm's only if it starts with exactly this line.
MANAGED_HEADER = (
    "# Managed by hakvm: generated from the cluster spec, do not edit by hand (changes are\n"
)


@dataclass(frozen=True)
class RenderedFile:
    """One file: `path` is absolute on the node (or relative under the cluster pseudo-node)."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    renderer: str = ""

    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class Secrets:
    """Generated secrets from the local state directory (never in the spec, never committed).

    `hakvm render` uses `Secrets.redacted()`, so rendered trees on disk hold no secret and
    stay byte-identical; apply passes the real ones and writes those files mode 0600.
    """

    drbd_master: str
    placeholder: str = REDACTED  # what stands in for a secret when rendered without them

    @classmethod
    def redacted(cls, placeholder: str = REDACTED) -> Secrets:
        return cls(drbd_master="", placeholder=placeholder)

    @property
    def is_redacted(self) -> bool:
        return not self.drbd_master

    def drbd_secret(self, resource: str) -> str:
        """A per-resource DRBD shared secret derived from the master (HMAC-SHA256)."""
        if self.is_redacted:
            return self.placeholder
        digest = hmac.new(self.drbd_master.encode(), resource.encode(), hashlib.sha256)
        return digest.hexdigest()[:48]


@dataclass(frozen=True)
class RenderContext:
    spec: ClusterSpec
    derived: Derived
    secrets: Secrets


# node name (or CLUSTER) -> files
Rendered = dict[str, list[RenderedFile]]


@cache
def templates() -> jinja2.Environment:
    """The one jinja2 environment every template renderer uses: undefined variables are
    errors, whitespace is exact, and nothing is HTML-escaped (these are config files)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hakvm.render"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
