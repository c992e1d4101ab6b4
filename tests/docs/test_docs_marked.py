"""Every shell block of the documents says whether it runs or only illustrates; the check itself refuses what it
should (checked on small documents written here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_blocks import DOCUMENTS, REPO, blocks, problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shell_block_is_marked_runnable_or_illustration(document: Path) -> None:
    wrong = problems(blocks(document))
    assert not wrong, "\n".join(["mark each block (see tests/docs/doc_blocks.py):", *wrong])


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_document_cites_files_outside_the_repository(document: Path) -> None:
    assert "shared/reference" not in document.read_text(), "cite the project's own files, or quote the figure"


def check(text: str) -> list[str]:
    return problems(blocks(REPO / "README.md", text))


def test_an_unmarked_shell_block_is_refused() -> None:
    assert check("Text.\n\n```sh\nls\n```\n") == ["README.md:3: a sh block without <!-- docs: run --> or illustration"]
    assert check("```bash\nls\n```\n") and check("```console\n$ ls\n```\n")


def test_a_mark_separated_from_its_fence_by_a_blank_line_does_not_count() -> None:
    assert check("<!-- docs: run -->\n\n```sh\nls\n```\n")


def test_a_fence_without_a_language_is_refused() -> None:
    assert check("```\nmake verify\n```\n") == [
        "README.md:1: a fence without a language (`sh` for commands, `text` for a tree or output)"
    ]


def test_bad_marks_are_refused() -> None:
    assert check("<!-- docs: run soon -->\n```sh\nls\n```\n")
    assert check("<!-- docs: illustrationish -->\n```sh\nls\n```\n")
    assert check("<!-- docs: run -->\n```python\nprint()\n```\n"), "only shell blocks run"


def test_marks_are_read_with_their_time_limit() -> None:
    text = (
        "<!-- docs: run -->\n```sh\nls\n```\n"
        "- item\n  <!-- docs: run timeout=90 -->\n  ```bash\n  echo a\n    b\n  ```\n"
        "<!-- docs: illustration: needs a cluster -->\n~~~~sh\n```\nray start\n~~~~\n"
        "```python\nx = 1\n```\n```text\ntree\n```\n"
    )
    found = blocks(REPO / "README.md", text)
    assert problems(found) == []
    assert [(b.line, b.language, b.mark, b.timeout_s) for b in found] == [
        (2, "sh", "run", 30.0),
        (7, "bash", "run", 90.0),
        (12, "sh", "illustration", 30.0),
        (16, "python", None, 30.0),
        (19, "text", None, 30.0),
    ]
    assert found[1].code == "echo a\n  b\n", "the fence's indent is removed, deeper indents stay"
    assert found[2].code == "```\nray start\n", "a longer fence is closed only by one as long"
