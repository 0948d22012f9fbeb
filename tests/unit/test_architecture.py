"""The layering docs/architecture.md describes, checked on the source tree (issue 17's
"done when"): bands and who may import whom, no import cycle, no private name across
modules, the one place for click/rich, Pacemaker's tools, connections, exit codes, and the
size limits; plus the behaviour the restructuring had to keep."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "hakvm"

# Bands, top to bottom: a module imports only from its own band or a lower one. remote and
# render share a level but not a band: neither imports the other. web (hakvm serve's HTTP
# side, pages and pictures) sits under cli, its only importer. agent (the code that runs on
# the nodes) is at the bottom and apart: it imports nothing else of hakvm.
BANDS = {"cli": 7, "web": 6, "drill": 5, "ops": 4, "deploy": 3, "remote": 2, "render": 2,
         "spec": 1, "agent": 0}  # fmt: skip
LAB_IMPORTERS = ("cli", "drill")
PACEMAKER_TOOLS = {"crm_mon", "cibadmin", "crm_resource", "crm_attribute", "crm_diff",
                   "crm_verify", "crm_simulate"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), str(modules()[name]))


def band(name: str) -> str:
    """The band of a module; hakvm itself (the version) and hakvm.errors are spec's."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in (*BANDS, "lab") else "spec"


def rank(name: str) -> int:
    return BANDS[band(name)]


def imports(name: str) -> Iterator[tuple[str, int, str]]:
    """(imported hakvm module, line, imported name or '') for every import in `name`,
    inside functions too. `from hakvm.x import y` is y when y is a module of its own."""
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hakvm"):
                    yield alias.name, node.lineno, ""
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("hakvm"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in modules():
                    yield sub, node.lineno, ""
                else:
                    yield node.module, node.lineno, alias.name


def third_party(name: str) -> set[str]:
    found = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


# --- 1. bands ---------------------------------------------------------------------------------


def test_every_module_imports_only_its_own_band_or_lower() -> None:
    wrong = []
    for name in modules():
        if band(name) == "lab":
            continue
        for target, line, _ in imports(name):
            if band(target) == "lab":
                if band(name) not in LAB_IMPORTERS:
                    wrong.append(f"{name}:{line} imports the lab ({target})")
            elif rank(target) > rank(name) or (
                rank(target) == rank(name) and band(target) != band(name)
            ):
                wrong.append(f"{name}:{line} ({band(name)}) imports {target} ({band(target)})")
    assert wrong == []


def test_lab_imports_nothing_else_of_hakvm() -> None:
    wrong = [
        f"{name}:{line} imports {target}"
        for name in modules()
        if band(name) == "lab"
        for target, line, _ in imports(name)
        if band(target) != "lab"
    ]
    assert wrong == []


def test_agent_imports_nothing_else_of_hakvm_and_only_the_standard_library() -> None:
    """It runs on the nodes with Debian's python3 alone: relative imports within the package,
    the standard library, nothing else (render/monitoring.py ships its files as they are)."""
    wrong = []
    for name in modules():
        if band(name) != "agent":
            continue
        wrong += [f"{name}:{line} imports {target}" for target, line, _ in imports(name)]
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                wrong.append(f"{name}:{node.lineno} imports from outside its package")
        outside = third_party(name) - set(sys.stdlib_module_names) - {"__future__"}
        wrong += [f"{name} imports {module}" for module in sorted(outside)]
    assert wrong == []


# --- 2. no cycle, no private name across modules -----------------------------------------------


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    graph = {name: {t for t, _, _ in imports(name) if t != name} for name in modules()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph.get(name, ())):
            if (cycle := visit(target, [*path, name])) is not None:
                return cycle
        done.add(name)
        return None

    cycles = [c for name in graph if (c := visit(name, [])) is not None]
    assert cycles == []


def test_no_private_name_is_imported_from_another_module() -> None:
    """The lab stands apart (the lab team's own rules)."""
    wrong = []
    for name in modules():
        if band(name) == "lab":
            continue
        imported = {a.asname or a.name for n in ast.walk(tree(name)) if isinstance(n, ast.Import)
                    for a in n.names if a.name.startswith("hakvm")}  # fmt: skip
        for target, line, what in imports(name):
            if what.startswith("_") and not what.startswith("__"):
                wrong.append(f"{name}:{line} imports {target}.{what}")
        aliases = imported | {
            a.asname or a.name
            for n in ast.walk(tree(name))
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("hakvm")
            for a in n.names
            if f"{n.module}.{a.name}" in modules()
        }
        for node in ast.walk(tree(name)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert wrong == []


# --- 3. the face --------------------------------------------------------------------------------


def test_only_the_command_line_imports_click_or_rich() -> None:
    wrong = [
        name
        for name in modules()
        if third_party(name) & {"click", "rich"}
        and band(name) != "cli"
        and name != "hakvm.lab.cli"
    ]
    assert wrong == []


def test_nothing_but_the_command_line_prints_or_exits() -> None:
    """The lab stands apart (its daemons are programs of their own)."""
    wrong = []
    for name in modules():
        if band(name) in ("cli", "lab"):
            continue
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                owner = getattr(getattr(func, "value", None), "id", "")
                if called in ("print", "exit", "_exit") and owner in ("", "sys", "os"):
                    wrong.append(f"{name}:{node.lineno} {owner or ''}{'.' if owner else ''}"
                                 f"{called}()")  # fmt: skip
            if isinstance(node, ast.Name) and node.id == "SystemExit":
                wrong.append(f"{name}:{node.lineno} SystemExit")
    assert wrong == []


# --- 4. Pacemaker ---------------------------------------------------------------------------


def _commands(module: ast.Module) -> Iterator[tuple[int, set[str]]]:
    """The programs each argv in `module` runs: the elements of a list or tuple of strings
    (any of them may be the program: `["env", ..., "crm_mon"]`), every command word of a
    `sh -c` script in one, and the first argument of `run(...)` (deploy.steps.run)."""
    for node in ast.walk(module):
        words: list[str] = []
        if isinstance(node, ast.List | ast.Tuple):
            words = [e.value for e in node.elts
                     if isinstance(e, ast.Constant) and isinstance(e.value, str)]  # fmt: skip
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "run" and node.args:
            first = node.args[0]
            words = [first.value] if isinstance(first, ast.Constant) else []
        programs = {w for w in words if isinstance(w, str)}
        if "-c" in words and words.index("-c") + 1 < len(words):
            script = str(words[words.index("-c") + 1])
            programs |= {m[1] for m in re.finditer(r"(?:^|[;&|(]\s*)([\w.-]+)", script)}
        if programs:
            yield node.lineno, programs


def test_only_remote_pacemaker_names_a_pacemaker_tool_in_a_command() -> None:
    """The agent is exempt: it runs on the node itself and is the node's own answer (its
    collector asks crm_mon and cibadmin there), not hakvm talking to a node."""
    wrong = []
    for name in modules():
        if name == "hakvm.remote.pacemaker" or band(name) == "agent":
            continue
        for line, programs in _commands(tree(name)):
            if programs & PACEMAKER_TOOLS:
                wrong.append(f"{name}:{line}: {sorted(programs & PACEMAKER_TOOLS)}")
    assert wrong == []


def test_the_pacemaker_check_sees_a_command_and_not_a_message() -> None:
    sample = ast.parse('x = ["sh", "-c", "systemctl -q is-active pacemaker && crm_mon -1"]')
    assert any("crm_mon" in programs for _, programs in _commands(sample))
    sample = ast.parse('run("cibadmin", "-Q")\ny = ("(crm_simulate failed)",)')
    found = [programs & PACEMAKER_TOOLS for _, programs in _commands(sample)]
    assert [f for f in found if f] == [{"cibadmin"}]


# --- 5. connections -------------------------------------------------------------------------


def test_only_the_session_and_the_connection_build_a_node_connection() -> None:
    allowed = {"hakvm.remote.session", "hakvm.remote.connection"}
    wrong = [
        f"{name}:{node.lineno}"
        for name in modules()
        if name not in allowed
        for node in ast.walk(tree(name))
        if isinstance(node, ast.Call)
        and "NodeConnection" in (getattr(node.func, "id", ""), getattr(node.func, "attr", ""))
    ]
    assert wrong == []


# --- 6. the planner is pure -------------------------------------------------------------------

FILE_READS = {"open", "read_text", "read_bytes", "stat", "exists", "iterdir", "glob"}


@pytest.mark.parametrize("name", ["hakvm.deploy.phases", "hakvm.deploy.quorum"])
def test_deploy_phases_awaits_nothing_reads_no_file_imports_no_command(name: str) -> None:
    found = []
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Await | ast.AsyncFunctionDef | ast.AsyncFor | ast.AsyncWith):
            found.append(f"{node.lineno}: async")
        if isinstance(node, ast.Call):
            called = getattr(node.func, "id", "") or getattr(node.func, "attr", "")
            if called in FILE_READS:
                found.append(f"{node.lineno}: {called}()")
    found += [f"{line}: imports {t}" for t, line, _ in imports(name) if rank(t) > rank(name)]
    assert found == []


# --- 7. exit codes ----------------------------------------------------------------------------


def test_exit_codes_are_defined_once() -> None:
    """In hakvm/errors.py (and hakvm/lab/cli.py, which stands apart): nowhere else a name
    EXIT_*, an `exit_code` set to a number, or a command returning a bare number."""
    allowed = {"hakvm.errors", "hakvm.lab.cli"}
    wrong = []
    for name in modules():
        if name in allowed:
            continue
        for node in ast.walk(tree(name)):
            targets = []
            if isinstance(node, ast.Assign):
                targets = [t for t in node.targets if isinstance(t, ast.Name | ast.Attribute)]
                value = node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, ast.keyword) and node.arg == "exit_code":
                targets, value = [ast.Name(id="exit_code")], node.value
            for target in targets:
                label = getattr(target, "id", "") or getattr(target, "attr", "")
                number = isinstance(value, ast.Constant) and isinstance(value.value, int)
                if label.startswith("EXIT_") or (label == "exit_code" and number):
                    wrong.append(f"{name}:{node.lineno} {label}")
            if (
                band(name) == "cli"
                and isinstance(node, ast.Return)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, int)
                and not isinstance(node.value.value, bool)
            ):
                wrong.append(f"{name}:{node.lineno} returns {node.value.value}")
    assert wrong == []


# --- 8. sizes -----------------------------------------------------------------------------------


def test_no_source_file_over_700_lines_and_cli_modules_at_most_250() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > 700} == {}
    assert {n: s for n, s in sizes.items() if band(n) == "cli" and s > 250} == {}


# --- 9. lint configuration ------------------------------------------------------------------


def test_lint_keeps_imports_at_the_top_and_functions_short() -> None:
    ruff = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert not {"PLC0415", "PLR0912", "PLR0915"} & set(ruff["ignore"])
    lazy = {path for path, codes in ruff["per-file-ignores"].items() if "PLC0415" in codes}
    assert lazy <= {"src/hakvm/cli/**", "src/hakvm/lab/cli.py", "tests/**"}
    long_ok = {p for p, c in ruff["per-file-ignores"].items() if {"PLR0912", "PLR0915"} & set(c)}
    assert long_ok <= {"src/hakvm/lab/image.py"}  # the lab team's, not this package's


def test_every_long_function_says_why() -> None:
    bare = []
    for name, path in modules().items():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = re.search(r"#\s*noqa:\s*([A-Z0-9, ]+)(.*)", line)
            codes = set(re.split(r"[ ,]+", match[1])) if match else set()
            if match and {"PLR0912", "PLR0915"} & codes and len(match[2].strip(" -")) < 10:
                bare.append(f"{name}:{number}")
    assert bare == []


# --- 10. behaviour kept -----------------------------------------------------------------------

COMMANDS = ["apply", "demo", "doctor", "drain", "drill", "export", "init", "lab", "migrate",
            "plan", "render", "replace-node", "schema", "serve", "status", "undrain",
            "validate", "vm"]  # fmt: skip


def test_help_lists_the_same_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from hakvm.cli import main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == COMMANDS


def test_status_schema_is_the_documented_one_byte_for_byte(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hakvm.cli import main

    assert main(["status", "--schema", "any.yaml"]) == 0
    assert capsys.readouterr().out == (REPO / "docs" / "status.schema.json").read_text()


def test_python_m_hakvm_cli_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hakvm.cli", "--version"], capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "hakvm, version 0.1.0\n")
