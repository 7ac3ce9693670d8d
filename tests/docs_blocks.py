"""The code blocks of the documentation: which run in the suite, in which order, and which are marked skipped.

A ```bash block and a plain ```python block (no markdown-exec options: those run when the site builds) are
runnable; the line directly above a fence may say ``<!-- docs-test: skip: <the reason> -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = ("bash", "python")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<lang>[\w+-]*)\s*(?P<options>.*)$")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(?P<reason>.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced block: ``line`` is the fence's line number in ``page`` (1-based)."""

    page: str
    line: int
    lang: str
    code: str
    skip_reason: str | None


def doc_pages() -> list[str]:
    """README.md and every Markdown page under docs/, relative to the checkout."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [str(page.relative_to(REPO)) for page in pages]


def runnable_blocks(page: str) -> list[Block]:
    """The ```bash and plain ```python blocks of ``page``, in order."""
    return [block for block in _blocks((REPO / page).read_text().splitlines(), page) if block.lang in RUNNABLE]


def _blocks(lines: list[str], page: str) -> list[Block]:
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, ticks = len(opening["indent"]), opening["ticks"]
        end = index + 1
        while end < len(lines) and not re.fullmatch(rf"\s*{ticks}`*\s*", lines[end]):
            end += 1
        code = "\n".join(_outdented(line, indent) for line in lines[index + 1 : end])
        above = SKIP.search(lines[index - 1]) if index else None
        lang = opening["lang"] if not opening["options"] else f"{opening['lang']} {opening['options']}"
        blocks.append(Block(page, index + 1, lang, code + "\n", above["reason"] if above else None))
        index = end + 1
    return blocks


def _outdented(line: str, indent: int) -> str:
    """A block's line without the fence's own indentation (a list item's block); its own indentation kept."""
    return line[indent:] if line[:indent].isspace() or not indent else line.lstrip()


__all__ = ["Block", "REPO", "doc_pages", "runnable_blocks"]
