"""Bounded reading of the files the exporter is configured by, and a bounded YAML loader.

A file is read only if it is a regular file no larger than its limit: a device (``/dev/zero``),
a named pipe, a socket or a directory is refused before a byte is read, and a named pipe cannot
block the open (it is opened non-blocking, then checked with ``fstat``).

The YAML loader is PyYAML's safe loader with bounds checked while the document is composed, so a
hostile document is refused before it costs memory or time: nesting depth, the number of nodes
and the characters of all scalars, each counted with every alias written out in full (an alias
bomb is refused after a few thousand nodes, not after gigabytes); an alias inside the node it
names (a recursive structure); a key given twice in one mapping; and strings that are not valid
Unicode (a lone surrogate such as ``"\\ud800"``). Every refusal names where in the document it
happened (a key path) and the line.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KiB = 1024
MiB = 1024 * KiB

CONFIG_FILE_MAX_BYTES = 4 * MiB
"""The config file: thousands of targets fit with room to spare."""
WEB_CONFIG_FILE_MAX_BYTES = 1 * MiB
"""The web config file (``--web.config.file``)."""
SECRET_FILE_MAX_BYTES = 64 * KiB
"""A ``*_file`` secret: a token, password or key is a few hundred bytes."""
TLS_FILE_MAX_BYTES = 1 * MiB
"""A certificate, key or CA bundle file named by the web config file."""
TARGET_FILES_MAX = 1_000
"""Files that the config's ``target_files`` globs may match, all globs together."""
TARGET_FILES_MAX_TOTAL_BYTES = 16 * MiB
"""All target files together; each is also at most :data:`CONFIG_FILE_MAX_BYTES`."""

MAX_DEPTH = 64
"""Nesting levels of mappings and sequences; a config needs fewer than ten."""
MAX_NODES = 100_000
"""Keys, values and items of a document, aliases counted as what they stand for."""


class FileProblem(Exception):
    """Why a file is not read, as a predicate of the file: ``is a named pipe (FIFO), not a
    regular file``. The caller names the file."""


@dataclass
class YAMLProblem(Exception):
    """Why a YAML document is refused: where (the key path, as a tuple such as
    ``("targets", 0, "interval")``, empty when the problem is not within a key), the line and
    column (1-based; 0 when unknown) and what."""

    path: tuple[str | int, ...]
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return self.message


def format_size(size: int) -> str:
    """``65536`` → ``64 KiB``; ``4194304`` → ``4 MiB``."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_regular(info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
        raise FileProblem(f"is {kind}, not a regular file")
    if info.st_size > limit:
        raise FileProblem(f"is larger than {format_size(limit)}, the most that is read")


def _os_problem(exc: OSError | ValueError) -> FileProblem:
    if isinstance(exc, ValueError):  # os functions refuse a path with a NUL character
        return FileProblem("is not a valid path (it contains a NUL character)")
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return FileProblem("does not exist")
    if isinstance(exc, PermissionError):
        return FileProblem("is not readable (permission denied)")
    return FileProblem(f"cannot be read ({exc.strerror or type(exc).__name__})")


def regular_file(path: str | os.PathLike[str], limit: int) -> os.stat_result:
    """Check that ``path`` is a regular file of at most ``limit`` bytes, for a file handed to
    a library that opens it itself (``ssl.SSLContext.load_cert_chain``); raise
    :class:`FileProblem` if not."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:
        raise _os_problem(exc) from None
    _check_regular(info, limit)
    return info


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """The content of the regular file ``path``, at most ``limit`` bytes; raise
    :class:`FileProblem` for anything else.

    The path is checked before it is opened, so a device is never opened; the file is opened
    non-blocking (a named pipe put there in between cannot block) and checked again on its
    descriptor; at most ``limit + 1`` bytes are read, so a file that grows, or a special file
    that passes for a regular one with a size of 0 (``/proc``), is still bounded."""
    regular_file(path, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError) as exc:
        raise _os_problem(exc) from None
    with os.fdopen(fd, "rb") as file:
        try:
            _check_regular(os.fstat(fd), limit)
            data = file.read(limit + 1)
        except OSError as exc:
            raise _os_problem(exc) from None
    if len(data) > limit:
        raise FileProblem(f"is larger than {format_size(limit)}, the most that is read")
    return data


def read_text(path: str | os.PathLike[str], limit: int) -> str:
    """:func:`read_bytes`, decoded as UTF-8."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"is not UTF-8 text (byte {exc.start + 1} is not valid)") from None


# -- YAML -------------------------------------------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_CHECKED_TAGS = {
    # The scalar types whose construction can fail on a value the resolver let through (an
    # explicit tag, or a date such as 2001-02-30): constructed once while composing, so that the
    # failure is reported at its key.
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:int": "integer",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:timestamp": "date",
}


class _Mark:
    """Where a node starts: all that is kept of PyYAML's mark, which holds a reference to the
    text and takes several times the memory of the node itself."""

    __slots__ = ("column", "line")

    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"line {self.line + 1}, column {self.column + 1}"


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str, max_nodes: int, max_chars: int, max_depth: int) -> None:
        super().__init__(text)
        self.max_nodes, self.max_chars, self.max_depth = max_nodes, max_chars, max_depth
        self.nodes = 0
        self.chars = 0
        self.depth = 0
        """Collections open around the node being composed."""
        self.deepest = 0
        """The deepest level reached inside the node being composed, aliases written out."""
        self.path: list[str | int] = []
        self.open_anchors: set[str] = set()
        self.sizes: dict[str, tuple[int, int, int]] = {}
        """Each anchor's node: its nodes, characters and height, aliases inside written out."""

    def problem(self, message: str, mark: Any) -> YAMLProblem:
        line = mark.line + 1 if mark is not None else 0
        column = mark.column + 1 if mark is not None else 0
        if self.path and line:
            message = f"{message} (line {line})"
        return YAMLProblem(tuple(self.path), line, column, message)

    def reach(self, level: int, mark: Any) -> None:
        if level > self.max_depth:
            raise self.problem(f"nested deeper than {self.max_depth} levels", mark)
        self.deepest = max(self.deepest, level)

    def count(self, nodes: int, chars: int, mark: Any) -> None:
        self.nodes += nodes
        self.chars += chars
        if self.nodes > self.max_nodes:
            raise self.problem(
                f"the document has more than {self.max_nodes:,} keys, values and items "
                "(aliases counted as what they stand for)",
                mark,
            )
        if self.chars > self.max_chars:
            raise self.problem(
                f"the document's values have more than {self.max_chars:,} characters "
                "(aliases counted as what they stand for)",
                mark,
            )

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # A mapping's key is composed with index None, its value with the key's node.
        part: str | int | None = None
        if isinstance(parent, SequenceNode):
            part = len(parent.value)
        elif isinstance(parent, MappingNode) and index is not None:
            part = str(index.value) if isinstance(index, ScalarNode) else "?"
        if part is not None:
            self.path.append(part)
        try:
            return self._compose(parent, index)
        finally:
            if part is not None:
                self.path.pop()

    def _compose(self, parent: Node | None, index: Any) -> Node:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, AliasEvent):
            anchor = str(event.anchor)
            if anchor in self.open_anchors:
                raise self.problem(
                    f"the alias *{anchor} is inside the node it names (a recursive structure)",
                    mark,
                )
            alias = super().compose_node(parent, index)  # an undefined alias is its error
            assert alias is not None
            nodes, chars, height = self.sizes[anchor]
            self.reach(self.depth + height, mark)
            self.count(nodes, chars, mark)
            return alias
        collection = isinstance(event, CollectionStartEvent)
        nodes_before, chars_before, deepest_before = self.nodes, self.chars, self.deepest
        if collection:
            self.depth += 1
            self.reach(self.depth, mark)
            self.count(1, 0, mark)
        anchor = event.anchor
        if anchor is not None:
            self.open_anchors.add(anchor)
        node = super().compose_node(parent, index)
        assert node is not None
        if anchor is not None:
            self.open_anchors.discard(anchor)
        if isinstance(node, ScalarNode):
            self.check_scalar(node)
            self.count(1, len(node.value), mark)
        if isinstance(node, MappingNode):
            self.check_keys(node)
        height = self.deepest - self.depth + 1 if collection else 0
        if anchor is not None:
            self.sizes[anchor] = (self.nodes - nodes_before, self.chars - chars_before, height)
        if collection:
            self.depth -= 1
        self.deepest = max(deepest_before, self.deepest)
        node.start_mark, node.end_mark = _Mark(mark.line, mark.column), None
        return node

    def check_scalar(self, node: ScalarNode) -> None:
        value: str = node.value
        surrogate = _SURROGATE.search(value)
        if surrogate:
            raise self.problem(
                f"contains \\u{ord(surrogate.group()):04x}, a lone surrogate, which is not "
                "valid Unicode",
                node.start_mark,
            )
        kind = _CHECKED_TAGS.get(node.tag)
        if kind is not None:
            try:
                SafeConstructor.yaml_constructors[node.tag](self, node)
            except Exception:
                # PyYAML's constructors trust the resolver's pattern, which an explicit tag
                # skips (!!int "" raises IndexError, !!timestamp x AttributeError, ...).
                raise self.problem(f"not a valid {kind}", node.start_mark) from None

    def check_keys(self, node: MappingNode) -> None:
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            line = key.start_mark.line + 1
            identity = (key.tag, key.value)
            if identity in seen:
                first = seen[identity]
                where = f"on line {line}" if first == line else f"on lines {first} and {line}"
                self.path.append(str(key.value))
                raise self.problem(f"the key is given twice in one mapping ({where})", None)
            seen[identity] = line


def load_yaml(
    text: str,
    *,
    max_chars: int,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The one document in ``text``, decoded with PyYAML's safe loader; raise
    :class:`YAMLProblem` for a syntax error or a document past the bounds (see the module)."""
    try:
        loader = _BoundedLoader(text, max_nodes, max_chars, max_depth)
    except yaml.reader.ReaderError as exc:  # the text is checked for unprintable characters
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YAMLProblem(
            (), line, column, f"YAML syntax error: character {character:#06x} is not allowed"
        ) from None
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or "not valid YAML"
        if exc.context and exc.context.startswith("expected"):  # "... a single document"
            problem = f"{exc.context}, {problem}"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise YAMLProblem((), line, column, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YAMLProblem((), 0, 0, f"YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
