"""Which code cell started each sub-call, read from the fields the events carry.

A `subcall_start` names the iteration and block of its node that started it (schema 2; older
traces are upgraded in core/legacy.py), so the links hold however the events of different
nodes interleave: nothing here depends on the order events arrive in, beyond each node's own.
"""

from __future__ import annotations

from collections.abc import Iterable

from rlm_kernel.core.trace import CodeCell, Event

_Cell = tuple[str, int | None, int | None]  # node id, iteration, block


class CellLinks:
    """The sub-calls of each code cell, and those of cells that have not returned yet."""

    def __init__(self) -> None:
        self._cells: dict[_Cell, list[str]] = {}  # in the order the node started them
        self._returned: set[_Cell] = set()

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> CellLinks:
        links = cls()
        for event in events:
            links.add(event)
        return links

    def add(self, event: Event) -> None:
        d = event.data
        if event.kind == "subcall_start":
            self._cells.setdefault((event.node_id, d["iteration"], d["block"]), []).append(d["subcall_id"])
        elif event.kind == "code_result":
            self._returned.add((event.node_id, d["iteration"], d["index"]))

    def of_cell(self, node_id: str, cell: CodeCell) -> list[str]:
        return self._cells.get((node_id, cell.iteration, cell.index), [])

    def running(self, node_id: str) -> list[str]:
        """The sub-calls of the node's cells with no code_result yet (the cell running, or one cut short)."""
        return [
            sub_id
            for key, subs in self._cells.items()
            if key[0] == node_id and key not in self._returned
            for sub_id in subs
        ]
