"""Where each probe image's cells lie in a grid (:class:`GridLayout`): plain integers, no torch.

:func:`~lightning_explain.output.render.compose_grid` builds the grids and
:func:`~lightning_explain.output.render.grid_layout` recovers a layout from a grid's size; the dashboard's reader
(:mod:`lightning_explain.dashboard.data`) cuts cells with it inside TensorBoard's process, which must not import torch
for that (seconds at TensorBoard's start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PAD", "GridLayout"]

#: Pixels between the cells of a grid, and around it.
PAD = 2


@dataclass(frozen=True)
class GridLayout:
    """Where the rows of a grid made by :func:`compose_grid` lie, to cut one probe image's row back out.

    Row ``r`` (caption band and cells) spans ``row_box(r)``; its cell ``c`` spans ``cell_box(r, c)``, both as
    ``(top, left, bottom, right)`` pixel bounds (bottom/right exclusive).
    """

    rows: int
    columns: int
    cell_height: int
    cell_width: int
    band: int
    pad: int = PAD

    @property
    def row_height(self) -> int:
        return self.band + self.cell_height + self.pad

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the whole grid."""
        return self.rows * self.row_height + self.pad, self.columns * (self.cell_width + self.pad) + self.pad

    def row_box(self, row: int) -> tuple[int, int, int, int]:
        top = self.pad + row * self.row_height
        return top, 0, top + self.band + self.cell_height, self.size[1]

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        top = self.pad + row * self.row_height + self.band
        left = self.pad + column * (self.cell_width + self.pad)
        return top, left, top + self.cell_height, left + self.cell_width
