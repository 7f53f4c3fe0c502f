"""A run's stages as a graph: a node per stage, an edge per ``needs``,
laid out in columns by depth and coloured by status (the page's script
recolours the nodes as events arrive)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.daemon.records import StageRecord
from conveyor.daemon.web.html import Markup, html, join, url

WIDTH = 180
HEIGHT = 44
GAP_X = 56
GAP_Y = 14
MARGIN = 4
#: Characters of a stage name shown in its node (all of it in the tooltip).
NAME_CHARS = 22


@dataclass(frozen=True)
class Node:
    index: int
    column: int
    row: int

    @property
    def x(self) -> int:
        return MARGIN + self.column * (WIDTH + GAP_X)

    @property
    def y(self) -> int:
        return MARGIN + self.row * (HEIGHT + GAP_Y)


def layout(stages: Sequence[StageRecord]) -> list[Node]:
    """Columns by longest path from a stage without needs (stages come in
    execution order, so every need comes before the stage that needs it);
    in a column, stages ordered by the mean row of what they need."""
    position = {stage.name: index for index, stage in enumerate(stages)}
    column: list[int] = []
    for stage in stages:
        needs = [
            column[position[n]] for n in stage.needs if position.get(n, len(column)) < len(column)
        ]
        column.append(1 + max(needs) if needs else 0)
    rows = [0] * len(stages)
    by_column: dict[int, list[int]] = {}
    for index, col in enumerate(column):
        by_column.setdefault(col, []).append(index)
    for col in sorted(by_column):
        members = by_column[col]

        def weight(index: int) -> tuple[float, int]:
            needed = [rows[position[n]] for n in stages[index].needs if n in position]
            return (sum(needed) / len(needed) if needed else index, index)

        for row, index in enumerate(sorted(members, key=weight)):
            rows[index] = row
    return [Node(index, column[index], rows[index]) for index in range(len(stages))]


def _label(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def svg(run_id: str, stages: Sequence[StageRecord]) -> Markup:
    """The graph as inline SVG; each node links to its stage's log."""
    if not stages:
        return Markup('<p class="muted">No stages.</p>')
    nodes = layout(stages)
    position = {stage.name: index for index, stage in enumerate(stages)}
    width = MARGIN * 2 + (max(n.column for n in nodes) + 1) * (WIDTH + GAP_X) - GAP_X
    height = MARGIN * 2 + (max(n.row for n in nodes) + 1) * (HEIGHT + GAP_Y) - GAP_Y
    edges = []
    for node, stage in zip(nodes, stages, strict=True):
        for need in stage.needs:
            if need not in position:
                continue
            source = nodes[position[need]]
            x1, y1 = source.x + WIDTH, source.y + HEIGHT // 2
            x2, y2 = node.x, node.y + HEIGHT // 2
            bend = (x2 - x1) // 2
            edges.append(
                html(
                    '<path data-from="{}" data-to="{}" d="M{} {} C{} {} {} {} {} {}"/>',
                    str(source.index),
                    str(node.index),
                    str(x1),
                    str(y1),
                    str(x1 + bend),
                    str(y1),
                    str(x2 - bend),
                    str(y2),
                    str(x2),
                    str(y2),
                )
            )
    boxes = [
        html(
            '<a href="{href}"><g class="node" data-stage="{index}" data-status="{status}"'
            ' data-kind="{kind}" transform="translate({x} {y})"><title>{name}</title>'
            '<rect width="{w}" height="{h}" rx="6"/>'
            '<text class="name" x="10" y="18">{label}</text>'
            '<text class="state" x="10" y="35">{state}</text></g></a>',
            href=url("runs", run_id, "stages", stage.name),
            index=str(node.index),
            status=stage.status,
            kind=stage.kind,
            x=str(node.x),
            y=str(node.y),
            name=stage.name,
            w=str(WIDTH),
            h=str(HEIGHT),
            label=_label(stage.name),
            state=_state(stage),
        )
        for node, stage in zip(nodes, stages, strict=True)
    ]
    return html(
        '<svg class="dag" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"'
        ' aria-label="stages and their needs"><g class="edges">{edges}</g>{boxes}</svg>',
        w=str(width),
        h=str(height),
        edges=join(edges),
        boxes=join(boxes),
    )


def _state(stage: StageRecord) -> str:
    text = stage.status.value.replace("_", " ")
    if stage.attempt > 1:
        text += f" · attempt {stage.attempt}"
    return f"{stage.kind} · {text}"
