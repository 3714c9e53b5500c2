"""Architecture representations and helpers: RNN DAGs, micro-CNN cells, WPL keys, JSON, genotypes.

RNN DAG (spec §2.2): ``{node: [Node(child_id, name), ...]}``; ``-1`` (x[t]) and ``-2`` (h[t-1])
feed node 0; every node without a child feeds the ``avg`` node ``N``; node ``N`` feeds ``h[t]``
(``N + 1``). Micro-CNN (spec §2.3): :class:`MicroArchi` of two sorted edge lists
``(source, target, op_name)``.
"""

from __future__ import annotations

import collections
from collections import deque
from typing import NamedTuple


class Node(NamedTuple):
    id: int
    name: str


class MicroArchi(NamedTuple):
    normal_cell: list[tuple[int, int, str]]
    reduced_cell: list[tuple[int, int, str]]


def build_rnn_dag(activations: list[str], prev_nodes: list[int], num_blocks: int) -> dict[int, list[Node]]:
    """The DAG of one RNN cell from its N activation names and N-1 parent choices."""
    dag: dict[int, list[Node]] = collections.defaultdict(list)
    dag[-1] = [Node(0, activations[0])]
    dag[-2] = [Node(0, activations[0])]
    for jdx in range(1, num_blocks):
        dag[prev_nodes[jdx - 1]].append(Node(jdx, activations[jdx]))
    leaves = [n for n in range(num_blocks) if n not in dag]
    for leaf in leaves:
        dag[leaf] = [Node(num_blocks, "avg")]
    dag[num_blocks] = [Node(num_blocks + 1, "h[t]")]
    return dict(dag)


def rnn_edges_bfs(dag: dict[int, list[Node]], num_blocks: int) -> list[tuple[int, int]]:
    """Parent→child edges among nodes ``0…N-1``, breadth-first from node 0."""
    edges = []
    queue = deque([0])
    while queue:
        node = queue.popleft()
        for child in dag.get(node, []):
            if child.id < num_blocks:
                edges.append((node, child.id))
                queue.append(child.id)
    return edges


def rnn_leaves(dag: dict[int, list[Node]], num_blocks: int) -> list[int]:
    return sorted(n for n, children in dag.items() if 0 <= n < num_blocks and any(c.id == num_blocks for c in children))


def dag_to_keys(dag, num_blocks: int | None = None) -> list[str]:
    """WPL keys of an architecture: ``i-j-h``/``i-j-c`` per RNN edge, ``src-tgt-op`` per CNN edge."""
    if isinstance(dag, MicroArchi):
        raise TypeError("use cell_keys per cell of a MicroArchi (keys differ per cell type)")
    if num_blocks is None:
        num_blocks = max(dag) if dag else 0
    keys = []
    for parent, child in rnn_edges_bfs(dag, num_blocks):
        keys += [f"{parent}-{child}-h", f"{parent}-{child}-c"]
    return keys


def cell_keys(cell: list[tuple[int, int, str]]) -> list[str]:
    """``src-tgt-op`` per edge of one micro cell (a repeated edge stays repeated)."""
    return [f"{s}-{t}-{op}" for s, t, op in cell]


def dag_to_genotype(dag: dict[int, list[Node]], num_blocks: int) -> dict:
    """DARTS-format genotype: per node (activation, parent index + 1), concat = sorted leaves + 1."""
    parent = {0: -1}
    act = {}
    for src, children in dag.items():
        for child in children:
            if child.id < num_blocks:
                act[child.id] = child.name
                if src >= 0:
                    parent[child.id] = src
    recurrent = [(act[i].lower(), parent[i] + 1) for i in range(num_blocks)]
    concat = [leaf + 1 for leaf in rnn_leaves(dag, num_blocks)]
    return {"recurrent": recurrent, "concat": concat}


def dag_to_json(dag) -> dict:
    if isinstance(dag, MicroArchi):
        return {"type": "micro_cnn", "normal": [list(e) for e in dag.normal_cell],
                "reduce": [list(e) for e in dag.reduced_cell]}
    return {"type": "rnn", "dag": {str(k): [[c.id, c.name] for c in v] for k, v in dag.items()}}


def dag_from_json(obj: dict):
    if obj.get("type") == "micro_cnn":
        return MicroArchi([tuple(e) for e in obj["normal"]], [tuple(e) for e in obj["reduce"]])
    return {int(k): [Node(int(c[0]), str(c[1])) for c in v] for k, v in obj["dag"].items()}


def describe(dag) -> str:
    if isinstance(dag, MicroArchi):
        return f"normal={dag.normal_cell} reduce={dag.reduced_cell}"
    return " ".join(f"{k}->" + ",".join(f"{c.id}:{c.name}" for c in v) for k, v in sorted(dag.items()))
