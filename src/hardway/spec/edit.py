"""Edits hardway makes to cluster.yaml itself, by lines, so the user's comments and layout stay.

The YAML is only read (with positions) to find the lines; the result is checked by reading it
back: it must be exactly the old document minus the change, or nothing is written.
"""

from __future__ import annotations

import yaml

from ..errors import UsageError


def _end(node: yaml.Node) -> int:
    """The line after a node's last character. A block collection ends where the next token
    starts (past comments and blank lines), so its end is its last value's."""
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.flow_style is False and node.value:
        last = node.value[-1]
        return _end(last[1] if isinstance(node, yaml.MappingNode) else last)
    mark = node.end_mark
    return mark.line if mark.column == 0 else mark.line + 1


def _lines_of(item: yaml.MappingNode) -> tuple[int, int]:
    """[first, end) lines of a sequence item: from its `- ` line to its last value's (comments
    after it belong to what follows)."""
    return item.start_mark.line, _end(item)


def without_node(text: str, name: str, source: str = "cluster.yaml") -> str:
    """`text` without node `name`'s entry under `nodes:`, every other line as it was."""
    refuse = (f"{source}: cannot cut node {name}'s entry out by lines ({{}}); remove it from `nodes:` "
              "yourself, then run `hardway up`")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    nodes = next((v for k, v in root.value if k.value == "nodes"), None) if isinstance(root, yaml.MappingNode) else None
    if not isinstance(nodes, yaml.SequenceNode) or nodes.flow_style:
        raise UsageError(refuse.format("`nodes:` is not a block list, one `- ` per node"))
    items = [i for i in nodes.value if isinstance(i, yaml.MappingNode)
             and any(k.value == "name" and getattr(v, "value", None) == name for k, v in i.value)]
    if len(items) != 1:
        raise UsageError(f"{source}: no node named {name!r} under `nodes:`")
    first, end = _lines_of(items[0])
    lines = text.splitlines(keepends=True)
    head = lines[first][:items[0].start_mark.column]
    if head.strip() != "-":
        raise UsageError(refuse.format(f"line {first + 1} holds more than its entry"))
    index = nodes.value.index(items[0])
    if index + 1 < len(nodes.value) and nodes.value[index + 1].start_mark.line < end:
        raise UsageError(refuse.format(f"line {end} holds the next entry too"))
    out = "".join(lines[:first] + lines[end:])
    want = yaml.safe_load(text)
    want["nodes"] = [n for n in want["nodes"] if n.get("name") != name]
    if yaml.safe_load(out) != want:
        raise UsageError(refuse.format("the result would differ in more than that entry"))
    return out


__all__ = ["without_node"]
