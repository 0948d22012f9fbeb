"""Real-tool check for rendered libvirt domain XML: `virt-xml-validate FILE domain`."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def check_domain_xml(text: str) -> None:
    """Raise AssertionError with virt-xml-validate's output unless libvirt's domain RNG
    schema accepts `text` (virt-xml-validate needs xmllint, package libxml2-utils)."""
    with tempfile.TemporaryDirectory(prefix="hakvm-libvirt-") as tmp:
        path = Path(tmp, "domain.xml")
        path.write_text(text)
        res = subprocess.run(
            ["virt-xml-validate", str(path), "domain"],
            capture_output=True, text=True, check=False, timeout=60,
        )
        if res.returncode != 0 or "validates" not in res.stdout + res.stderr:
            raise AssertionError(
                f"virt-xml-validate rejected the domain (rc {res.returncode}):\n"
                f"{res.stdout}{res.stderr}"
            )
