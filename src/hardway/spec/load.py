"""Read cluster.yaml into a validated `ClusterSpec`, or a `SpecError` listing every problem.

Every command that reads the spec goes through `load_spec`, so all of them validate the same
way. Problems carry the YAML line so a user can jump to it.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError
from .checks import Problem, check_spec
from .model import ClusterSpec

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedSpec:
    spec: ClusterSpec
    warnings: list[str] = field(default_factory=list)


def load_spec(path: str | Path) -> LoadedSpec:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(
            [f"{path} does not exist: create one with `hardway init DIR --preset basic`"],
            source=str(path),
        ) from None
    except OSError as e:
        raise SpecError([f"cannot read {path}: {e.strerror}"], source=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SpecError(
            [f"line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
             "save the file as UTF-8"],
            source=str(path),
        ) from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, source: str = "cluster.yaml") -> LoadedSpec:
    data, lines, problems = _load_yaml(text)
    if problems:
        raise SpecError(problems, source)
    if not isinstance(data, dict):
        raise SpecError(["the file must be a mapping with keys name, kubernetes, nodes, ..."], source)
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_format_pydantic(e, lines) for e in exc.errors()], source) from None
    found = check_spec(spec)
    errors = [_format(p.path, p.message, lines) for p in found if p.error]
    warnings = [_format(p.path, p.message, lines) for p in found if not p.error]
    if errors:
        raise SpecError(errors, source)
    return LoadedSpec(spec, warnings)


# ---- YAML with positions ----


def _load_yaml(text: str) -> tuple[Any, dict[Path_, int], list[str]]:
    lines: dict[Path_, int] = {}
    problems: list[str] = []
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None, lines, ["the file is empty"]
            _walk(root, (), lines, problems)
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        return None, lines, [f"{where}not valid YAML: {problem}"]
    except RecursionError:
        return None, lines, ["the YAML nests too deeply, or an alias (*name) sits inside its own anchor (&name)"]
    return data, lines, problems


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], problems: list[str]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            if name in seen:
                problems.append(
                    f"line {key.start_mark.line + 1}: {_dotted(path + (name,))}: key given twice"
                )
            seen.add(name)
            lines[path + (name,)] = key.start_mark.line + 1
            _walk(value, path + (name,), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, problems)


# ---- formatting ----


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(path: Path_, lines: dict[Path_, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _format(path: Path_, message: str, lines: dict[Path_, int]) -> str:
    line = _line_of(path, lines)
    where = f"line {line}: " if line else ""
    return f"{where}{_dotted(path)}: {message}"


def _format_pydantic(err: Any, lines: dict[Path_, int]) -> str:
    loc: Path_ = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        msg = f"unknown key {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        if not close:
            close = [k for k in known if k.lower() == str(loc[-1]).lower()]
        if close:
            msg += f"; did you mean {close[0]!r}?"
        elif known:
            msg += f" (known keys here: {', '.join(sorted(known))})"
        return _format(loc, msg, lines)
    if kind == "missing":
        return _format(loc, "required key is missing", lines)
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if "input" in err and kind not in ("model_type", "dict_type", "list_type", "value_error"):
        msg += f" (got {err['input']!r})"
    return _format(loc, msg, lines)


def _known_keys(loc: Path_) -> list[str]:
    """The YAML keys allowed at `loc`, by walking the model classes along it."""
    model: Any = ClusterSpec
    for part in loc:
        if isinstance(part, int):
            continue
        model = _field_model(model, str(part))
        if model is None:
            return []
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _field_model(model: Any, key: str) -> Any:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    for name, f in model.model_fields.items():
        if key in (name, f.alias):
            return _unwrap(f.annotation)
    return None


def _unwrap(annotation: Any) -> Any:
    """list[Node] -> Node; Node | None -> Node."""
    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


__all__ = ["LoadedSpec", "Problem", "load_spec", "parse_spec"]
