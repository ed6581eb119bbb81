"""YAML loading that remembers where every key stood, so errors can name file, line and key path.

PyYAML's composer already records a start mark per node; we walk the node tree ourselves,
building plain Python values and a map from key path to line. ``${VAR}`` and ``${VAR:-default}``
in scalars are replaced from the environment here, where the line of the reference is known.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import ConfigIssue

__all__ = ["LoadedYaml", "load_yaml", "path_to_str"]

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


class _Builder:
    def __init__(self, doc: LoadedYaml, environ: dict[str, str]) -> None:
        self.doc = doc
        self.environ = environ

    def build(self, node: yaml.Node, path: Loc) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build_scalar(key_node, path)
                if not isinstance(key, (str, int)):
                    self.doc.issues.append(self.doc.issue(path, f"a key must be text, got {key!r}"))
                    continue
                child = (*path, key)
                self.doc.lines[child] = key_node.start_mark.line + 1
                if key in result:
                    self.doc.issues.append(self.doc.issue(child, "key given twice; remove one"))
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.build_scalar(node, path)

    def build_scalar(self, node: yaml.Node, path: Loc) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        # standard tags (int, float, bool, null, timestamp...) are constructed; a custom tag such as
        # !secret is not trusted with a constructor and stays plain text
        if node.tag.startswith("tag:yaml.org,2002:"):
            constructed = _LOADER.construct_object(node, deep=True)
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


def load_yaml(path: Path, environ: dict[str, str] | None = None) -> LoadedYaml:
    """Read a YAML file; syntax errors and unset variables become issues, never exceptions."""
    doc = LoadedYaml(str(path), None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        doc.issues.append(ConfigIssue(str(path), None, "", "file not found"))
        return doc
    except OSError as exc:
        doc.issues.append(ConfigIssue(str(path), None, "", f"cannot read: {exc.strerror}"))
        return doc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        doc.issues.append(ConfigIssue(str(path), line, "", f"YAML syntax: {exc.problem or exc}"))
        return doc
    if node is None:
        doc.data = {}
        return doc
    doc.data = _Builder(doc, dict(os.environ) if environ is None else environ).build(node, ())
    return doc
