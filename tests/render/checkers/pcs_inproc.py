"""Run the `pcs -f "$CIB" ...` lines of a rendered pcs script inside ONE pcs process.

Each pcs start costs ~1.5 s of Python imports; a script of 30 commands would take over a
minute. This runs under the system Python that pcs is installed for (not the venv):
`python3 pcs_inproc.py SCRIPT CIB_FILE`. It checks the commands exactly as written in the
script; the bash scaffolding around them (argument handling, cib-push) is not executed.
"""

import shlex
import sys


def commands(script: str, cib_file: str) -> list[list[str]]:
    joined = script.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) > 2 and words[0] == "pcs" and words[1] == "-f":
            out.append(["-f", cib_file, *words[3:]])
    return out


def main() -> int:
    from pcs import app  # only importable under the system Python

    with open(sys.argv[1]) as fh:
        script = fh.read()
    for argv in commands(script, sys.argv[2]):
        try:
            app.main(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                print(f"pcs {shlex.join(argv)} failed with {exc.code}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
