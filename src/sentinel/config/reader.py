"""Typed access to KDL nodes, collecting every problem instead of stopping at the first.

ckdl gives the values, `kdl_positions` gives the lines; `ConfigNode` joins the two and knows its path
(`routes > route "api" > matches`) so that each error can say exactly where it is. `Block` reads the
children of one block as keyed settings: it rejects unknown and repeated keys once, up front, and its
getters check arity and type.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import ckdl

from sentinel.config.errors import ConfigIssue
from sentinel.config.kdl_positions import SourceNode

T = TypeVar("T")
E = TypeVar("E")

_MISSING: Any = object()


class Collector:
    """Where every problem of one load goes."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []

    def add(self, path: str, message: str, line: int | None = None, column: int | None = None) -> None:
        self.issues.append(ConfigIssue(self.file, path, message, line, column))


def plain(value: Any) -> Any:
    """A KDL value without its type annotation (annotations carry no meaning in this schema)."""
    return value.value if isinstance(value, ckdl.Value) else value


def describe(value: Any) -> str:
    """How a value reads in KDL, for messages."""
    value = plain(value)
    if value is None:
        return "#null"
    if isinstance(value, bool):
        return "#true" if value else "#false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def type_name(value: Any) -> str:
    value = plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def suggest(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean "x"?)' hint, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class ConfigNode:
    """One KDL node with its position and its path in the document."""

    __slots__ = ("_children", "args", "collector", "column", "line", "name", "path", "properties", "raw")

    def __init__(
        self,
        raw: ckdl.Node,
        source: SourceNode | None,
        parent_path: str,
        collector: Collector,
    ) -> None:
        self.raw = raw
        self.name: str = raw.name
        self.args: list[Any] = [plain(a) for a in raw.args]
        self.properties: dict[str, Any] = {k: plain(v) for k, v in raw.properties.items()}
        self.line = source.line if source is not None else None
        self.column = source.column if source is not None else None
        self.collector = collector
        label = self.name
        if self.name in _ID_NODES and self.args and isinstance(self.args[0], str):
            label = f'{self.name} "{self.args[0]}"'
        self.path = f"{parent_path} > {label}" if parent_path else label
        source_children = source.children if source is not None else []
        # Pair by index; positions are dropped if the two parsers disagree on the structure.
        aligned = len(source_children) == len(raw.children) and all(
            s.name == r.name for s, r in zip(source_children, raw.children, strict=True)
        )
        self._children = [
            ConfigNode(r, source_children[i] if aligned else None, self.path, collector)
            for i, r in enumerate(raw.children)
        ]

    @property
    def children(self) -> list[ConfigNode]:
        return self._children

    def error(self, message: str) -> None:
        self.collector.add(self.path, message, self.line, self.column)

    # -- shape checks -------------------------------------------------------------------------------

    def no_values(self) -> None:
        """A pure block: `listeners { ... }`."""
        if self.args or self.properties:
            self.error(f"{self.name} takes no values, only a {{ }} block")

    def id_arg(self) -> str | None:
        """The single string id of `listener "ID" { ... }` and friends."""
        if len(self.args) != 1 or not isinstance(self.args[0], str) or not self.args[0]:
            self.error(f'{self.name} needs exactly one non-empty string id, e.g. {self.name} "main" {{ ... }}')
            return None
        return str(self.args[0])

    def no_properties(self, allowed: Iterable[str] = ()) -> None:
        allowed = set(allowed)
        for key in self.properties:
            if key not in allowed:
                hint = suggest(key, allowed)
                self.error(f"unknown property {key}=…{hint}")


_ID_NODES = frozenset({"listener", "route", "upstream", "agent", "filter"})


class Block:
    """The keyed settings inside one `{ }` block.

    `keys` are the canonical names accepted, `aliases` maps other accepted spellings to them and
    `repeatable` lists keys that may appear more than once (e.g. `target`).
    """

    def __init__(
        self,
        node: ConfigNode,
        keys: Iterable[str],
        aliases: Mapping[str, str] | None = None,
        repeatable: Iterable[str] = (),
    ) -> None:
        self.node = node
        self.keys = frozenset(keys)
        aliases = dict(aliases or {})
        repeatable = frozenset(repeatable)
        self._by_key: dict[str, list[ConfigNode]] = {}
        for child in node.children:
            key = aliases.get(child.name, child.name)
            if key not in self.keys:
                hint = suggest(child.name, self.keys)
                child.error(
                    f'unknown key "{child.name}" in {node.name}{hint}; valid keys: {", ".join(sorted(self.keys))}'
                )
                continue
            seen = self._by_key.setdefault(key, [])
            if seen and key not in repeatable:
                child.error(f'"{child.name}" is set more than once in {node.name} (first on line {seen[0].line})')
                continue
            seen.append(child)

    def has(self, key: str) -> bool:
        return key in self._by_key

    def all(self, key: str) -> list[ConfigNode]:
        return self._by_key.get(key, [])

    def get(self, key: str) -> ConfigNode | None:
        nodes = self._by_key.get(key)
        return nodes[0] if nodes else None

    def missing(self, key: str, example: str) -> None:
        self.node.error(f'missing required key "{key}", e.g. {example}')

    # -- scalar getters -----------------------------------------------------------------------------

    def _single(self, key: str) -> tuple[ConfigNode, Any] | None:
        """The one value of `key VALUE`, or None (absent or malformed, the latter reported)."""
        node = self.get(key)
        if node is None:
            return None
        if node.children:
            node.error(f"{key} takes a single value, not a {{ }} block")
            return None
        if node.properties:
            node.error(f"{key} takes a single value, not properties ({', '.join(node.properties)})")
            return None
        if len(node.args) != 1:
            node.error(f"{key} takes exactly one value, got {len(node.args)}")
            return None
        return node, node.args[0]

    def string(self, key: str, default: T = _MISSING, *, required: str | None = None) -> str | T:
        got = self._single(key)
        if got is None:
            if required is not None and not self.has(key):
                self.missing(key, required)
            return default
        node, value = got
        if not isinstance(value, str):
            node.error(f"{key} must be a string, got {type_name(value)} {describe(value)}")
            return default
        if value == "":
            node.error(f"{key} must not be empty")
            return default
        return value

    def integer(self, key: str, default: T, *, minimum: int | None = None, maximum: int | None = None) -> int | T:
        got = self._single(key)
        if got is None:
            return default
        node, value = got
        if isinstance(value, bool) or not isinstance(value, int):
            node.error(f"{key} must be an integer, got {type_name(value)} {describe(value)}")
            return default
        if not _in_range(node, key, value, minimum, maximum):
            return default
        return value

    def number(self, key: str, default: T, *, minimum: float | None = None, maximum: float | None = None) -> float | T:
        got = self._single(key)
        if got is None:
            return default
        node, value = got
        if isinstance(value, bool) or not isinstance(value, int | float):
            node.error(f"{key} must be a number, got {type_name(value)} {describe(value)}")
            return default
        if math.isnan(value) or math.isinf(value):
            node.error(f"{key} must be a finite number, got {describe(value)}")
            return default
        if not _in_range(node, key, value, minimum, maximum):
            return default
        return float(value)

    def boolean(self, key: str, default: T) -> bool | T:
        got = self._single(key)
        if got is None:
            return default
        node, value = got
        if not isinstance(value, bool):
            hint = " (KDL v2 writes booleans as #true and #false)" if value in ("true", "false") else ""
            node.error(f"{key} must be #true or #false, got {type_name(value)} {describe(value)}{hint}")
            return default
        return value

    def choice(
        self, key: str, choices: Mapping[str, E], default: T, *, extra: Mapping[str, str] | None = None
    ) -> E | T:
        """A string from a fixed set; `extra` maps known-but-refused values to their explanation."""
        raw = self.string(key, None)
        node = self.get(key)
        if raw is None or node is None:
            return default
        value = pick(node, key, raw, choices, extra)
        return default if value is None else value

    def strings(self, key: str) -> list[str] | None:
        """`key "a" "b" ...`: one or more strings. None when absent or malformed (reported)."""
        node = self.get(key)
        if node is None:
            return None
        if node.children or node.properties:
            node.error(f'{key} takes a list of strings, e.g. {key} "a" "b"')
            return None
        if not node.args:
            node.error(f"{key} needs at least one value")
            return None
        bad = [a for a in node.args if not isinstance(a, str) or not a]
        if bad:
            node.error(f"{key} takes non-empty strings only, got {describe(bad[0])}")
            return None
        return [str(a) for a in node.args]

    def block(self, key: str) -> ConfigNode | None:
        """A child that must be a `{ }` block with no values of its own."""
        node = self.get(key)
        if node is not None:
            node.no_values()
        return node


def read_entries(block: ConfigNode, kind: str, reader: Callable[[ConfigNode], T | None]) -> list[T]:
    """The `kind "ID" { ... }` entries of a block such as `listeners`: other children are errors, entries
    that fail to read are left out (their problems are already reported)."""
    block.no_values()
    Block(block, [kind], repeatable=[kind])
    return [item for item in (reader(c) for c in block.children if c.name == kind) if item is not None]


def pick(node: ConfigNode, key: str, raw: str, choices: Mapping[str, E], extra: Mapping[str, str] | None) -> E | None:
    """Map a string onto a fixed set of values, reporting unknown ones with the valid list."""
    value = choices.get(raw) if raw in choices else choices.get(raw.lower())
    if value is not None:
        return value
    if extra and raw.lower() in extra:
        node.error(f'{key} "{raw}" {extra[raw.lower()]}')
        return None
    valid = ", ".join(sorted({k for k in choices if "-" not in k or k.replace("-", "_") not in choices}))
    node.error(f'unknown {key} "{raw}"{suggest(raw, choices)}; valid values: {valid}')
    return None


def _in_range(node: ConfigNode, key: str, value: float, minimum: float | None, maximum: float | None) -> bool:
    if minimum is not None and value < minimum:
        node.error(f"{key} must be at least {minimum}, got {value}")
        return False
    if maximum is not None and value > maximum:
        node.error(f"{key} must be at most {maximum}, got {value}")
        return False
    return True
