"""Which rows of each UNet call belong to which image and sub-prompt.

A host's CFG denoiser runs the UNet once per step on the whole batch, or in slices (A1111 with
`batch_cond_uncond` off, or when cond and uncond contexts differ in length), and may drop the uncond rows
(NGMS, skip early CFG). The slices always come in row order, so a cursor that starts at row 0 at each denoiser
step and advances by each call's batch size tells the rows of every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .seam import BatchLayout, RowRole


@dataclass
class UNetCallTracker:
    layout: BatchLayout | None = None
    _roles: list[RowRole] = field(default_factory=list)
    _cursor: int = 0
    _current: list[RowRole] | None = None
    step: int = -1

    def begin_step(self, layout: BatchLayout, step: int) -> None:
        """Called by the host's denoiser at each step, before the UNet runs."""
        if layout != self.layout:
            self.layout = layout
            self._roles = layout.roles()
        self._cursor = 0
        self._current = None
        self.step = step

    def begin_call(self, batch_size: int) -> list[RowRole] | None:
        """Called right before each UNet forward with its batch size; returns and remembers that call's roles."""
        if self.layout is None:
            self._current = None
            return None
        start, end = self._cursor, self._cursor + batch_size
        if end > len(self._roles):
            # More rows than the layout names: a call we cannot attribute (another extension's extra pass).
            self._current = None
            return None
        self._cursor = end
        self._current = self._roles[start:end]
        return self._current

    @property
    def rows_run(self) -> int:
        """Rows the UNet ran since the step began."""
        return self._cursor

    def end_call(self) -> None:
        self._current = None

    def current(self) -> list[RowRole] | None:
        return self._current

    def reset(self) -> None:
        self.layout = None
        self._roles = []
        self._cursor = 0
        self._current = None
        self.step = -1
