"""YAML loading that remembers where every key stood, so errors can name file, line and key path.

PyYAML's composer already records a start mark per node; we walk the node tree ourselves,
building plain Python values and a map from key path to line. ``${VAR}`` and ``${VAR:-default}``
in scalars are replaced from the environment here, where the line of the reference is known.

A config file is input we do not trust to be small or well-formed, so reading it is bounded: only
regular files are opened (a FIFO or a device named ``*.yaml`` would block or never end), at most
:data:`MAX_FILE_BYTES` are read, the text must be UTF-8, and aliases may expand to at most
:data:`MAX_ALIAS_NODES` values in all (a 600-byte "billion laughs" alias bomb expands to hundreds of
millions). Each refusal is an issue naming the file and line, like any other config error.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import ConfigIssue

__all__ = ["MAX_ALIAS_NODES", "MAX_FILE_BYTES", "LoadedYaml", "load_yaml", "path_to_str"]

MAX_FILE_BYTES = 1 << 20
"""A site file for hundreds of machines is a few hundred KiB; anything past 1 MiB is refused."""
MAX_ALIAS_NODES = 100_000
"""How many values aliases (``*name``) may add to a document in all, counting what they repeat."""

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")

Loc = tuple[str | int, ...]


def path_to_str(path: Loc) -> str:
    """``("machines", 0, "source")`` -> ``machines[0].source``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class LoadedYaml:
    """A YAML document as plain values, with the line (1-based) of every key path in it."""

    file: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)

    def line_of(self, path: Loc) -> int | None:
        """Line of the deepest prefix of ``path`` that exists in the document."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return None

    def issue(self, path: Loc, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(path), path_to_str(path), message)


class _AliasBomb(Exception):
    """Aliases expanded past MAX_ALIAS_NODES; carries the line of the alias that crossed it."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Builder:
    def __init__(self, doc: LoadedYaml, environ: dict[str, str]) -> None:
        self.doc = doc
        self.environ = environ
        self._built: set[int] = set()  # nodes built once; meeting one again means an alias repeats it
        self._aliased = 0
        self._alias_depth = 0
        self._alias_line = 0

    def build(self, node: yaml.Node, path: Loc) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        repeat = id(node) in self._built
        self._built.add(id(node))
        if repeat:
            if not self._alias_depth:  # the alias itself: the line of the key (or of the list) that holds it
                holder = path[:-1] if path and isinstance(path[-1], int) else path
                self._alias_line = self.doc.line_of(holder) or node.start_mark.line + 1
            self._alias_depth += 1
        try:
            if self._alias_depth:
                self._aliased += 1
                if self._aliased > MAX_ALIAS_NODES:
                    raise _AliasBomb(self._alias_line)
            return self._build(node, path)
        finally:
            if repeat:
                self._alias_depth -= 1

    def _build(self, node: yaml.Node, path: Loc) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            merged: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:  # `<<: *defaults`: keys given here win over merged ones
                    merged.update(self._merge(value_node, path))
                    continue
                key = self.build_scalar(key_node, path)
                if not isinstance(key, (str, int)):
                    self.doc.issues.append(self.doc.issue(path, f"a key must be text, got {key!r}"))
                    continue
                child = (*path, key)
                self.doc.lines[child] = key_node.start_mark.line + 1
                if key in result:
                    self.doc.issues.append(self.doc.issue(child, "key given twice; remove one"))
                result[key] = self.build(value_node, child)
            return {**merged, **result} if merged else result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.build_scalar(node, path)

    def _merge(self, node: yaml.Node, path: Loc) -> dict[Any, Any]:
        """The mapping (or list of mappings, earlier ones winning) a merge key brings in."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out: dict[Any, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self.doc.issues.append(self.doc.issue(path, "<< (merge) needs a mapping or a list of mappings"))
                continue
            out.update(self.build(source, path))
        return out

    def build_scalar(self, node: yaml.Node, path: Loc) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        # standard tags (int, float, bool, null, timestamp...) are constructed; a custom tag such as
        # !secret is not trusted with a constructor and stays plain text
        if node.tag.startswith("tag:yaml.org,2002:"):
            try:
                constructed = _LOADER.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:  # `!!binary %`, `!!int nope`
                problem = getattr(exc, "problem", None) or f"{node.tag.rsplit(':', 1)[-1]} value {node.value!r}: {exc}"
                self.doc.issues.append(ConfigIssue(self.doc.file, node.start_mark.line + 1, path_to_str(path), problem))
                return None
        else:
            constructed = yaml.SafeLoader.construct_scalar(_LOADER, node)
        if isinstance(constructed, str) and "${" in constructed:
            return self.interpolate(constructed, node, path)
        return constructed

    def interpolate(self, text: str, node: yaml.Node, path: Loc) -> str:
        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.doc.issues.append(
                ConfigIssue(
                    self.doc.file,
                    node.start_mark.line + 1,
                    path_to_str(path),
                    f"environment variable {name} is not set; export it or write ${{{name}:-default}}",
                )
            )
            return ""

        return _ENV.sub(repl, text)


_LOADER = yaml.SafeLoader("")
_MERGE = "tag:yaml.org,2002:merge"
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml composes ~10x faster, same nodes and marks


def load_yaml(path: Path, environ: dict[str, str] | None = None) -> LoadedYaml:
    """Read a YAML file; syntax errors, unreadable or oversized files and unset variables become
    issues, never exceptions."""
    doc = LoadedYaml(str(path), None)
    text = _read_text(path, doc)
    if text is None:
        return doc
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        doc.issues.append(ConfigIssue(str(path), line, "", f"YAML syntax: {exc.problem or exc}"))
        return doc
    except yaml.YAMLError as exc:
        doc.issues.append(ConfigIssue(str(path), None, "", f"YAML syntax: {exc}"))
        return doc
    except RecursionError:
        doc.issues.append(ConfigIssue(str(path), None, "", "YAML nested too deeply to be a config file"))
        return doc
    if node is None:
        doc.data = {}
        return doc
    try:
        doc.data = _Builder(doc, dict(os.environ) if environ is None else environ).build(node, ())
    except _AliasBomb as exc:
        doc.data = None
        message = f"aliases (*name) expand to more than {MAX_ALIAS_NODES} values (an alias bomb?); write the values out"
        doc.issues.append(ConfigIssue(str(path), exc.line, "", message))
    except RecursionError:
        doc.data = None
        doc.issues.append(ConfigIssue(str(path), None, "", "YAML nested too deeply (or an alias that contains itself)"))
    return doc


def _read_text(path: Path, doc: LoadedYaml) -> str | None:
    """The file's text, or None with an issue: missing, not a regular file, too large, not UTF-8."""
    file = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses anything irregular
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        doc.issues.append(ConfigIssue(file, None, "", "file not found"))
        return None
    except OSError as exc:
        doc.issues.append(ConfigIssue(file, None, "", f"cannot read: {exc.strerror}"))
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            doc.issues.append(ConfigIssue(file, None, "", f"{what}, not a config file; remove it or rename it"))
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        doc.issues.append(ConfigIssue(file, None, "", f"cannot read: {exc.strerror}"))
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n") + 1
        message = f"file larger than {MAX_FILE_BYTES >> 20} MiB (reached at this line); a config file is far smaller"
        doc.issues.append(ConfigIssue(file, line, "", message))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8"
        doc.issues.append(ConfigIssue(file, line, "", message))
        return None
