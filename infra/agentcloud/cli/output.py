"""Output for people: aligned tables."""

from __future__ import annotations

from collections.abc import Sequence


def table(rows: Sequence[Sequence[object]], rule: bool = False) -> None:
    """Aligned columns, the first row a header (underlined with ``rule``)."""
    cells = [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if rule and n == 0:
            print("  ".join("-" * w for w in widths))
