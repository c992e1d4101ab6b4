"""The fenced code blocks of the project's Markdown, and the mark each shell block carries.

A shell block is runnable or an illustration, said by an HTML comment on the line right before its fence (invisible
when rendered, so a reader sees the commands and nothing else):

    <!-- docs: run -->                  run as written by tests/docs, in order, in one bash session per document
    <!-- docs: run timeout=120 -->      the same, with a time limit in seconds other than the default
    <!-- docs: illustration -->         shown, never run (a placeholder, a long run, a server that blocks, ...)
    <!-- docs: illustration: why -->    the same, with the reason for a reader of the source

A fence without a language is refused too: it could hide commands from this check (`text` names a tree or output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The documents whose commands a newcomer runs: the README, docs/, and the three package READMEs.
DOCUMENTS = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        REPO / "functions" / "trainer-tinygrad" / "README.md",
        REPO / "conformance" / "README.md",
        REPO / "evidence" / "README.md",
    ]
)
SHELL = frozenset({"sh", "bash", "shell", "console", "zsh"})
DEFAULT_TIMEOUT_S = 30.0

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARK = re.compile(r"^\s*<!-- docs: (?P<kind>run|illustration)(?P<rest>.*?)\s*-->\s*$")
_TIMEOUT = re.compile(r"^\s+timeout=(?P<seconds>\d+(\.\d+)?)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of the fence), its language, its text and its mark."""

    path: Path
    line: int
    language: str
    code: str
    mark: str | None  # "run", "illustration", or None when the line before the fence is no mark
    timeout_s: float = DEFAULT_TIMEOUT_S
    mark_error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.mark == "run"


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown document, in order."""
    lines = (path.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        language = opening["info"].strip().split(" ", 1)[0].lower()
        indent = len(opening["indent"])  # CommonMark: the fence's indent is removed from each line, where present
        code = "\n".join(line[min(indent, len(line) - len(line.lstrip(" "))) :] for line in lines[i + 1 : end])
        code += "\n"
        found.append(_marked(path, i + 1, language, code, lines[i - 1] if i > 0 else ""))
        i = end + 1
    return found


def _marked(path: Path, line: int, language: str, code: str, before: str) -> Block:
    mark = _MARK.match(before)
    if mark is None:
        return Block(path, line, language, code, None)
    rest = mark["rest"]
    if mark["kind"] == "illustration":
        ok = rest == "" or rest.startswith(":")
        return Block(path, line, language, code, "illustration", mark_error=None if ok else f"bad mark {before!r}")
    timeout = _TIMEOUT.match(rest)
    if rest and timeout is None:
        return Block(path, line, language, code, "run", mark_error=f"bad mark {before!r}: `run` or `run timeout=S`")
    seconds = float(timeout["seconds"]) if timeout else DEFAULT_TIMEOUT_S
    return Block(path, line, language, code, "run", seconds)


def problems(found: list[Block]) -> list[str]:
    """What is wrong with the marks: a shell block without one, a bad mark, a fence without a language, a runnable
    block that is not a plain shell script."""
    wrong = []
    for block in found:
        if block.language == "":
            wrong.append(f"{block.where}: a fence without a language (`sh` for commands, `text` for a tree or output)")
        elif block.mark_error:
            wrong.append(f"{block.where}: {block.mark_error}")
        elif block.language in SHELL and block.mark is None:
            wrong.append(f"{block.where}: a {block.language} block without <!-- docs: run --> or illustration")
        elif block.runnable and block.language not in SHELL - {"console"}:
            wrong.append(f"{block.where}: only sh/bash blocks run (a {block.language} block is marked run)")
    return wrong
