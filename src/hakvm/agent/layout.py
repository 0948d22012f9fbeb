"""Where the agent lives and writes on a node: one list, shared by the renderer that installs
it, the collector, the alert agent and the docs (docs/metrics.md)."""

from __future__ import annotations

INSTALL_DIR = "/usr/local/lib/hakvm"
PACKAGE = "hakvm_agent"  # this package's name on a node (it is hakvm.agent here)
PACKAGE_DIR = f"{INSTALL_DIR}/{PACKAGE}"
COLLECTOR_PATH = f"{INSTALL_DIR}/hakvm-metrics"  # run by hakvm-metrics.service
ALERT_AGENT_PATH = f"{INSTALL_DIR}/alert-agent"  # run by Pacemaker (as hacluster)

CONFIG_PATH = "/etc/hakvm/agent.json"  # rendered from the spec, no secret

# node_exporter's textfile collector directory (Debian's compiled-in default).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE_PATH = f"{TEXTFILE_DIR}/hakvm.prom"

# Not under /var/lib/hakvm: a qcow2-on-xfs VM's file system is mounted at /var/lib/hakvm/<vm>,
# and a VM may be called "events". The alert agent runs as Pacemaker's hacluster user: its
# directory is hacluster's (systemd-tmpfiles, /etc/tmpfiles.d/hakvm-agent.conf), so it can
# rotate its file.
LOG_DIR = "/var/log/hakvm"
EVENTS_DIR = f"{LOG_DIR}/events"
EVENTS_PATH = f"{EVENTS_DIR}/events.jsonl"
EVENTS_MAX_BYTES = 1024 * 1024  # then events.jsonl -> events.jsonl.1 (one old file kept)
# The webhook's URL (it may hold a token): 0600 hacluster, out of the CIB and the spec.
ALERTS_CONF_DIR = "/etc/hakvm-alerts"
WEBHOOK_URL_PATH = f"{ALERTS_CONF_DIR}/webhook.url"

# `hakvm drill` writes each scenario's last result here on both nodes (root, JSON).
DRILLS_DIR = f"{LOG_DIR}/drills"

# What the collector keeps between runs (the BMC check's last answer).
CACHE_PATH = "/run/hakvm/metrics-cache.json"
