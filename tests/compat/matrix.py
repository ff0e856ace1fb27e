"""The compat matrix as tables: each test is one cell (``cell(grid, row, column)``), and
tests/compat/conftest.py prints every grid with the cells' results at the end of the session
(and writes them to test-artifacts/compat-matrix.md).

A cell that no test covers is shown as ``n/a`` with the reason its grid gives for it: nothing
is left out silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

MARKER = "matrix"  # registered by conftest; cell() spells it out


@dataclass
class Grid:
    """A table: ``rows`` x ``columns``, with the reason for each cell that is not a test."""

    title: str
    corner: str
    rows: Sequence[str]
    columns: Sequence[str]
    not_applicable: Mapping[tuple[str, str], str] = field(default_factory=dict)
    notes: Sequence[str] = ()


GRIDS: dict[str, Grid] = {}


def register(name: str, grid: Grid) -> Grid:
    GRIDS[name] = grid
    return grid


def cell(grid: str, row: str, column: str) -> pytest.MarkDecorator:
    """The mark that makes a test the cell (``row``, ``column``) of ``grid``."""
    return pytest.mark.matrix(grid, row, column)


def cells(grid: str, rows: Sequence[Any], column: str, ids: Callable[[Any], str]) -> list[Any]:
    """The parameters of ``column``'s test: one per row (with ``label``, ``not_applicable``
    and perhaps ``xfail``: column -> a known defect) that has a cell there, marked as that
    cell, with a strict xfail where the row names a known defect."""
    params = []
    for row in rows:
        if column in row.not_applicable:
            continue
        marks = [cell(grid, row.label, column)]
        xfail = getattr(row, "xfail", {})
        if column in xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=xfail[column]))
        params.append(pytest.param(row, marks=marks, id=ids(row)))
    return params


# What each test outcome shows in a cell.
PASS, FAIL, XFAIL, XPASS, ERROR, SKIP = "pass", "FAIL", "xfail", "XPASS(strict)", "ERROR", "SKIP"
NOT_APPLICABLE, NOT_RUN = "n/a", "not run"


Result = tuple[str, str | None]  # what the cell shows, and the reason of an expected failure


def render(name: str, grid: Grid, results: Mapping[tuple[str, str, str], Result]) -> str:
    """``grid`` as a Markdown table with its footnotes (reasons for n/a and xfail cells)."""
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    lines = [
        f"### {grid.title}",
        "",
        "| " + " | ".join([grid.corner, *grid.columns]) + " |",
        "|" + "---|" * (len(grid.columns) + 1),
    ]
    for row in grid.rows:
        shown = []
        for column in grid.columns:
            why = grid.not_applicable.get((row, column))
            if (name, row, column) not in results:
                shown.append(f"{NOT_APPLICABLE} {note(why)}" if why else NOT_RUN)
                continue
            result, reason = results[name, row, column]
            shown.append(f"{result} {note(reason)}" if reason else result)
        lines.append("| " + " | ".join([f"`{row}`", *shown]) + " |")
    lines.append("")
    lines += [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
    lines += [f"- {text}" for text in grid.notes]
    return "\n".join(lines).rstrip() + "\n"
