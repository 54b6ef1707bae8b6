"""Printing bench results as ``rich`` tables (the JSON file is the record; tables are for people)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats to ``digits`` significant digits, ``None`` as a dash, the rest as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:,.2f} MiB"


def print_table(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                caption: str | None = None) -> None:
    """One table: ``rows`` of already formatted (or plain) cells under ``columns``."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[cell if isinstance(cell, str) else fmt(cell) for cell in row])
    console.print(table)
