"""The order of stages and the cycles among them, from one topological sort.

``graphlib`` does the sort in time linear in stages and needs; among the
stages ready at the same time, the one earliest in the file goes first, so
the order is stable with respect to file order. Stages a cycle blocks are
left out of the order, and each cycle is named by its stages.
"""

from __future__ import annotations

import contextlib
import graphlib
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Ordering", "order_stages"]


@dataclass(frozen=True)
class Ordering:
    #: Every stage no cycle blocks, in execution order.
    order: list[str]
    #: Each cycle as the stages along its needs, starting with the one
    #: earliest in the file: ``["a", "c", "b"]`` reads a needs c needs b
    #: needs a.
    cycles: list[list[str]]


def order_stages(needs: Mapping[str, Sequence[str]]) -> Ordering:
    """Order the stages of ``needs`` (stage → the stages it needs, keys in
    file order); every needed stage must be a key."""
    position = {name: index for index, name in enumerate(needs)}
    sorter = graphlib.TopologicalSorter({name: dict.fromkeys(deps) for name, deps in needs.items()})
    # On a cycle, the sorter still hands out every stage the cycle does not
    # block; the cycles are named below, all of them rather than graphlib's one.
    with contextlib.suppress(graphlib.CycleError):
        sorter.prepare()
    order: list[str] = []
    ready: list[tuple[int, str]] = []
    while True:
        for name in sorter.get_ready():
            heapq.heappush(ready, (position[name], name))
        if not ready:
            break
        _, name = heapq.heappop(ready)
        order.append(name)
        sorter.done(name)
    cycles = _cycles(needs, set(order)) if len(order) < len(needs) else []
    return Ordering(order, cycles)


def _cycles(needs: Mapping[str, Sequence[str]], ordered: set[str]) -> list[list[str]]:
    """The cycles among the stages left out of the order.

    Every stage left out needs another one left out, so following each
    one's first such need always comes back to a stage already seen: a new
    cycle when it is on the current walk. Each stage is walked once.
    """
    position = {name: index for index, name in enumerate(needs)}
    on_walk: dict[str, int] = {}
    walked: set[str] = set()
    cycles: list[list[str]] = []
    for start in needs:
        if start in ordered or start in walked:
            continue
        walk: list[str] = []
        name = start
        while name not in walked and name not in on_walk:
            on_walk[name] = len(walk)
            walk.append(name)
            name = next(need for need in needs[name] if need not in ordered)
        if name in on_walk:
            cycle = walk[on_walk[name] :]
            first = min(range(len(cycle)), key=lambda i: position[cycle[i]])
            cycles.append(cycle[first:] + cycle[:first])
        walked.update(walk)
        on_walk.clear()
    return cycles
