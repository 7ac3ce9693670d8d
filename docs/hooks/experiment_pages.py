"""What the Results pages print at build time (their markdown-exec blocks import this): the committed files under
``experiments/`` as Markdown, so that every number and figure on those pages is read from the data, not retyped.

Paths are from the checkout the site is built from. Figures are not printed here: a page links them in its own
Markdown (``![...](../../experiments/...)`` is not checked by MkDocs inside a block's output, while
``![...](../experiments/...)`` in the page is, docs/hooks/figures.py making the PNGs files of the site).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
HEADING = re.compile(r"^(#+) ", re.M)
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^):]+)\)")


def read_csv(path: str) -> pd.DataFrame:
    """A committed CSV under the checkout, e.g. ``experiments/paper/report.csv``."""
    return pd.read_csv(ROOT / path)


def markdown_file(
    path: str, sections: list[str] | None = None, drop: list[str] | None = None, shift: int = 1, shown: bool = False
) -> str:
    """A committed Markdown file without its title: only the ``##`` sections whose heading starts with one of
    ``sections`` (all when None), less those starting with one of ``drop``, headings ``shift`` levels deeper
    An image in what is kept fails, unless ``shown`` says the page links it itself (see above): then it is left
    out."""
    text = (ROOT / path).read_text()
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    intro, *parts = re.split(r"^(?=## )", body, flags=re.M)
    kept = [intro] if sections is None else []
    for part in parts:
        title = part[3:].split("\n", 1)[0]
        wanted = sections is None or any(title.startswith(s) for s in sections)
        if wanted and not any(title.startswith(d) for d in drop or []):
            kept.append(part)
    markdown = HEADING.sub(lambda m: "#" * (len(m[1]) + shift) + " ", "".join(kept))
    if shown:
        markdown = IMAGE.sub("", markdown)
    elif IMAGE.search(markdown):
        raise ValueError(f"{path}: an image in the sections kept; link it from the page instead")
    return markdown.strip() + "\n"


def collapsed(title: str, markdown: str) -> str:
    """``markdown`` in a collapsed details block (pymdownx.details) titled ``title``."""
    body = "\n".join(f"    {line}" if line else "" for line in markdown.splitlines())
    return f'??? note "{title}"\n\n{body}\n'


def table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, numbers right-aligned, as written (format them first)."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(t) else "---" for t in frame.dtypes) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std``, or the mean alone where there is one seed (no std)."""
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
