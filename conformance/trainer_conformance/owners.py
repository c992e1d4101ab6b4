"""CODEOWNERS: who answers for a path (GitHub's rules: the last matching pattern wins)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
    directory = pattern.endswith("/")
    body = pattern.strip("/")
    out = []
    i = 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    # A pattern names a file or a directory; a directory owns everything below it.
    suffix = "/.*" if directory else "(?:/.*)?"
    return re.compile(f"^{prefix}{''.join(out)}{suffix}$")


class CodeOwners:
    """A parsed CODEOWNERS file."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[re.Pattern[str], list[str]]] = []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            pattern, *owners = line.split()
            self.rules.append((_pattern_regex(pattern), owners))

    @classmethod
    def load(cls, path: Path) -> CodeOwners:
        """Read a CODEOWNERS file."""
        return cls(path.read_text())

    def owners_of(self, path: str) -> list[str]:
        """The owners of one path (the last matching rule's; empty when none matches)."""
        found: list[str] = []
        for regex, owners in self.rules:
            if regex.match(path.lstrip("/")):
                found = owners
        return found

    def owners_for(self, paths: Iterable[str]) -> list[str]:
        """The owners of several paths, each once, in first-seen order."""
        seen: list[str] = []
        for path in paths:
            for owner in self.owners_of(path):
                if owner not in seen:
                    seen.append(owner)
        return seen
