"""The monitoring phase's steps beyond writing render/monitoring.py's files: the packages the
agent needs (python3; ipmitool for the BMC check; Debian's prometheus-node-exporter when the
spec asks for it), the webhook URL file, and the units turned on (systemd-tmpfiles for the
agent's directories, the hakvm-metrics timer, node_exporter). Pure: facts in, steps out.

The webhook URL is read from the file the spec names (beside the spec, like the BMC
passwords) and checked strictly here, so a bad URL stops the plan with one line naming the
field; it is never shown (plan hides 0600 files) nor put in the CIB.
"""

from __future__ import annotations

from pathlib import Path

from hakvm.agent import layout
from hakvm.agent.events import BadUrlError, check_url
from hakvm.deploy.steps import ENABLE, Run, Step, Write, run
from hakvm.errors import InputError
from hakvm.remote.facts import NodeFacts
from hakvm.render import monitoring as rendered
from hakvm.spec.models import ClusterSpec, OsFamily
from hakvm.spec.paths import resolve

PHASE = "monitoring"
NODE_EXPORTER = "prometheus-node-exporter"  # Debian's package and unit
WEBHOOK_FIELD = "monitoring.alerts.webhook_url_file"


class WebhookUrlError(InputError):
    """The webhook URL file is missing or holds no acceptable URL (one line naming the field)."""


def wanted_packages(spec: ClusterSpec, node: str) -> set[str]:
    """What the agent needs on `node`: python3; ipmitool to check the BMC of the peer it
    fences; node_exporter when the spec asks for it."""
    mon = spec.monitoring
    wanted = {"python3"} if mon.metrics or mon.events else set()
    if mon.metrics and any(n.bmc is not None for n in spec.nodes if n.name != node):
        wanted.add("ipmitool")
    if mon.node_exporter:
        wanted.add(NODE_EXPORTER)
    return wanted


def packages(spec: ClusterSpec, node: str, facts: NodeFacts) -> list[Step]:
    missing = sorted(wanted_packages(spec, node) - facts.packages)
    if not missing:
        return []
    if spec.cluster.os is OsFamily.DEBIAN12:
        install: tuple[Run, ...] = (
            run("apt-get", "update", "-q", timeout=900),
            run("apt-get", "install", "-y", "-q", "--no-install-recommends", *missing,
                DEBIAN_FRONTEND="noninteractive", timeout=1800),
        )  # fmt: skip
    else:
        install = (run("dnf", "install", "-y", *missing, timeout=1800),)
    return [Step(node, PHASE, f"install {' '.join(missing)}", install)]


def read_webhook_url(spec: ClusterSpec, spec_dir: Path) -> bytes | None:
    """The webhook URL file's content (a checked URL and a newline), None without one."""
    name = spec.monitoring.alerts.webhook_url_file
    if name is None or not spec.monitoring.events:
        return None
    path = resolve(spec_dir, name)
    try:
        with path.open("rb") as handle:
            raw = handle.read(4097)
    except OSError as exc:
        raise WebhookUrlError(f"{WEBHOOK_FIELD}: {path}: {exc.strerror}") from None
    try:
        url = check_url(raw.decode("utf-8"))
    except (UnicodeDecodeError, BadUrlError) as exc:
        raise WebhookUrlError(f"{WEBHOOK_FIELD}: {path}: the URL {exc}") from None
    return url.encode() + b"\n"


def webhook(node: str, facts: NodeFacts, content: bytes | None) -> list[Step]:
    """The URL for the alert agent (hacluster's, 0600: plan never shows it)."""
    if content is None:
        return []
    current = facts.files.get(layout.WEBHOOK_URL_PATH)
    if current is not None and current.same_as(content) and current.mode == 0o600:
        return []
    write = Write(layout.WEBHOOK_URL_PATH, content, 0o600, "hacluster", "haclient")
    path = layout.WEBHOOK_URL_PATH
    return [Step(node, PHASE, f"{'create' if current is None else 'update'} {path}", (write,),
                 f"--- {path}\n+++ {path}\n(private file: content not shown)\n")]  # fmt: skip


def node_steps(
    spec: ClusterSpec, facts: NodeFacts, writes: list[Step], url: bytes | None
) -> list[Step]:
    """One node's: packages first, then its files (`writes`), the URL, the units started."""
    written = [a.path for step in writes for a in step.actions if isinstance(a, Write)]
    return [
        *packages(spec, facts.name, facts),
        *writes,
        *webhook(facts.name, facts, url),
        *activate(spec, facts.name, facts, written),
    ]


def activate(spec: ClusterSpec, node: str, facts: NodeFacts, written: list[str]) -> list[Step]:
    """Directories, units and services after their files were written (`written`)."""
    mon = spec.monitoring
    actions: list[Run] = []
    if rendered.TMPFILES_PATH in written:
        actions.append(run("systemd-tmpfiles", "--create", rendered.TMPFILES_PATH))
    units = {rendered.SERVICE_PATH, rendered.TIMER_PATH} & set(written)
    if units:
        actions.append(run("systemctl", "daemon-reload"))
    timer = rendered.TIMER
    if mon.metrics and (units or not facts.services_active.get(timer)
                        or not facts.services_enabled.get(timer)):  # fmt: skip
        actions.append(run(*ENABLE, timer))
        actions.append(run("systemctl", "restart", timer))
    if mon.node_exporter and not (facts.services_active.get(NODE_EXPORTER)
                                  and facts.services_enabled.get(NODE_EXPORTER)):  # fmt: skip
        actions.append(run(*ENABLE, "--now", NODE_EXPORTER))
    if not actions:
        return []
    return [Step(node, PHASE, "start the hakvm agent's timer and node_exporter", tuple(actions))]
