"""Code that runs on the nodes themselves: the metrics collector (`hakvm-metrics.timer`) and
the Pacemaker alert agent.

Standard library only (Debian 12's python3, 3.11: no lxml, no pydantic on a node), and it
imports nothing else of hakvm (relative imports inside this package only): `apply` ships
these files as they are (render/monitoring.py reads them as data) to
/usr/local/lib/hakvm/hakvm_agent/ and runs them there. Everything a node needs to know about
the cluster comes from /etc/hakvm/agent.json, rendered from the spec (no secret in it).
"""
