#!/usr/bin/env python3
"""Run the shell command blocks of Markdown files exactly as they are written.

    python3 .ci/doc_blocks.py [--list] FILE.md...

Every fenced block whose info string is `sh` (indented ones inside lists too) is a command
block. The blocks of one file run in order, from the repository root, in one
`bash -euo pipefail` process, so a variable set by one block (`job=$(...)`) reaches the
next, as it does for a reader pasting them into one terminal. Each file gets a fresh
process. A block that cannot run on a CI machine says so on the line just before its fence:

    <!-- doc-blocks: skip: needs a Slurm cluster (what checks it instead) -->

and is listed as skipped with that reason; there is no other way to leave a block out.
Blocks of other languages (`text`, `json`, `python`, none) are not commands and are not run.

Exit status: 0 when every block ran and exited 0; 1 naming the file and line of the block
that failed (its output is above); 2 for a usage error or a block with an unclosed fence.
`--list` prints the blocks and what would happen to each, without running anything.

A cluster that a block started with `cluster/local.sh` is stopped when the file ends,
whatever happened (the blocks use local.sh's default state directory).
"""
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SKIP = re.compile(r"^\s*<!--\s*doc-blocks:\s*skip:\s*(.+?)\s*-->\s*$")


@dataclass
class Block:
    file: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: Optional[str]


def blocks_of(path: Path) -> List[Block]:
    rel = os.path.relpath(path, REPO)
    lines = path.read_text(encoding="utf-8").splitlines()
    out: List[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            sys.exit(f"{rel}:{start + 1}: the code block opened here is never closed")
        i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.match(prev)
        out.append(Block(rel, start + 1, lang, "\n".join(body), skip.group(1) if skip else None))
    return out


def script_for(blocks: List[Block]) -> str:
    parts = [
        "set -euo pipefail",
        'doc_block=""',
        # Stop a cluster the blocks started, and say which block failed.
        "trap 'status=$?; cluster/local.sh stop >/dev/null 2>&1 || true;"
        ' if [ $status -ne 0 ]; then echo "doc-blocks: FAILED in the block at $doc_block'
        ' (exit $status)" >&2; fi' "' EXIT",
    ]
    for b in blocks:
        where = f"{b.file}:{b.line}"
        parts.append(f"doc_block={where}")
        parts.append(f"echo '::: {where}' >&2")
        parts.append(b.text)
    return "\n".join(parts) + "\n"


def main(argv: List[str]) -> int:
    args = [a for a in argv if a != "--list"]
    if not args or any(a.startswith("-") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for name in args:
        path = Path(name)
        if not path.is_file():
            print(f"doc-blocks: no such file: {name}", file=sys.stderr)
            return 2
        blocks = [b for b in blocks_of(path.resolve()) if b.lang == "sh"]
        to_run = [b for b in blocks if b.skip is None]
        for b in blocks:
            what = f"skip ({b.skip})" if b.skip else "run"
            print(f"doc-blocks: {b.file}:{b.line}: {what}", file=sys.stderr)
        if "--list" in argv or not to_run:
            continue
        env = dict(os.environ)
        # The blocks use local.sh's defaults, as a reader's terminal would.
        env.pop("DISTGAT_LOCAL_DIR", None)
        env.pop("DISTGAT_COORDINATOR", None)
        result = subprocess.run(["bash", "-c", script_for(to_run)], cwd=REPO, env=env)
        if result.returncode != 0:
            print(f"doc-blocks: {name}: a block failed (exit {result.returncode})", file=sys.stderr)
            failed = True
            break
        print(f"doc-blocks: {name}: {len(to_run)} blocks ran", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
