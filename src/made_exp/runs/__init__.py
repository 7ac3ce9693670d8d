"""What a run is: its config schema and validation, its directory layout, its records, sweeps; and every run under a
directory as a pandas DataFrame (``load_runs``, imported on first use so that pandas loads only where it is used)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from made_exp.runs.dataframe import load_runs

__all__ = ["load_runs"]


def __getattr__(name: str) -> Any:
    if name == "load_runs":
        from made_exp.runs.dataframe import load_runs

        return load_runs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
