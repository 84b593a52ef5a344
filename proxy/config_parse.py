"""Reading a YAML config into typed values: the file, ``${VAR}`` expansion, and building
frozen dataclasses from plain data with the key path in every error. Schema-free: the schema
and its rules are config.py's.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(Exception):
    """A config problem, with the key path it concerns."""


class FileMode(int):
    """Permission bits for a file the proxy creates (``0660``): YAML's octal int or a string."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class EnvText(str):
    """A string that ``${VAR}`` expansion produced: a number or boolean field parses it, as
    YAML would have parsed the same text written in the file (``port: ${PORT:-8080}``)."""


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string; a missing VAR is an error."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

        expanded, count = _VAR.subn(sub, value)
        return EnvText(expanded) if count else value
    if isinstance(value, dict):
        return {k: expand_env(v, env, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def build(cls: Any, raw: Any, path: str) -> Any:
    """Build a value of type ``cls`` from plain YAML data, naming ``path`` in every error."""
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    where = path or "<root>"
    if dataclasses.is_dataclass(cls):
        return _build_dataclass(cls, raw, path)
    if origin in (typing.Union, types.UnionType):
        return _build_union(args, raw, path)
    if origin is Literal:
        if raw not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(str, args))}; got {raw!r}")
        return str(raw) if isinstance(raw, str) else raw
    if origin is tuple:
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: expected a list, got {type(raw).__name__}")
        return tuple(build(args[0], v, f"{path}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
        return {str(k): build(args[1], v, _join(path, str(k))) for k, v in raw.items()}
    return _build_scalar(cls, raw, where)


def _build_union(args: tuple[Any, ...], raw: Any, path: str) -> Any:
    """``X | None`` (also from an empty ``${VAR:-}`` when X is not text), or the first of
    several types that accepts ``raw``."""
    inner = [a for a in args if a is not type(None)]
    optional = len(inner) < len(args)
    if optional and (raw is None or (isinstance(raw, EnvText) and not raw and str not in inner)):
        return None
    first: ConfigError | None = None
    for kind in inner:
        try:
            return build(kind, raw, path)
        except ConfigError as exc:
            first = first or exc
    assert first is not None
    raise first


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _from_env(cls: Any, raw: EnvText, where: str) -> Any:
    """The number or boolean an expanded ``${VAR}`` spells, or a ConfigError naming it."""
    text = raw.strip()
    try:
        if cls is bool and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        if cls is int or cls is FileMode:
            return int(text, 8 if cls is FileMode else 10)
        if cls is float:
            return float(text)
    except ValueError:
        pass
    kind = {bool: "true or false", float: "a number"}.get(cls, "an integer")
    raise ConfigError(f"{where}: expected {kind}, got {str(raw)!r} (from the environment)")


def _build_scalar(cls: Any, raw: Any, where: str) -> Any:
    if isinstance(raw, EnvText) and cls is not str:
        raw = _from_env(cls, raw, where)
    if cls is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if cls is FileMode:
        return _file_mode(raw, where)
    if cls is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected an integer, got {raw!r}")
        return raw
    if cls is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        return float(raw)
    if cls is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {raw!r}")
        return str(raw)
    raise ConfigError(f"{where}: unsupported type {cls!r}")  # pragma: no cover


def _file_mode(raw: Any, where: str) -> FileMode:
    """YAML reads ``0660`` as the octal int it is; a string is read as octal too."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return FileMode(raw)
    if isinstance(raw, str):
        try:
            return FileMode(int(raw.strip(), 8))
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected an octal file mode such as '0660', got {raw!r}")


def _build_dataclass(cls: Any, raw: Any, path: str) -> Any:
    where = path or "<root>"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = build(hints[name], raw[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, name)}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{_join(path, str(exc))}") from None


def read_yaml(path: str | Path) -> Any:
    """The file's YAML data; unreadable, non-UTF-8, invalid YAML or a repeated key is an error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at}: invalid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: invalid YAML: {type(exc).__name__}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}:{exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` entries may be overridden, that is their point
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it
                if first != line:
                    raise ConfigError(f"{line}: duplicate key {key!r} (first on line {first})")
        return super().construct_mapping(node, deep)


def positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value!r}")


def non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value!r}")


def port_number(name: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}: must be 1..65535, got {value!r}")
