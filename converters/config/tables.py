"""Reading one TOML table with plain-words errors: unknown keys, wrong types, paths."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A model config the kit cannot use; the message names the key and the fix."""


_MISSING = object()
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Table:
    """One table of the config (``where``: how errors name it, e.g. ``[input]``), checked for
    unknown keys on creation."""

    def __init__(self, data: Any, where: str, known: tuple[str, ...], base: Path):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table, found {describe_value(data)}; "
                              f"write it as a [{where.strip('[]')}] section")
        self.data, self.where, self.known, self.base = data, where, known, base
        unknown = sorted(set(data) - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}{hint}; known keys: "
                              f"{', '.join(known)}")

    def name(self, key: str) -> str:
        """How errors name ``key``."""
        return f"{self.where} {key}" if self.where.startswith("[") else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING, hint: str = "") -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ConfigError(f"{self.name(key)}: missing; {hint or 'add it'}")
        return default

    def string(self, key: str, default: Any = _MISSING, hint: str = "") -> Any:
        value = self.raw(key, default, hint)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.name(key)}: expected a non-empty string, found "
                              f"{describe_value(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.string(key, default, f"give one of {quoted(choices)}")
        if value not in choices:
            raise ConfigError(f"{self.name(key)}: {value!r} is not one of {quoted(choices)}")
        return value

    def number(self, key: str, default: Any = _MISSING, hint: str = "") -> float:
        value = self.raw(key, default, hint)
        if not is_number(value):
            raise ConfigError(f"{self.name(key)}: expected a number, found {describe_value(value)}")
        return float(value)

    def strings(self, key: str, default: Any = _MISSING, hint: str = "") -> tuple[str, ...]:
        value = self.raw(key, default, hint)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                  for v in value):
            raise ConfigError(f"{self.name(key)}: expected a list of non-empty strings, found "
                              f"{describe_value(value)}")
        if len(set(value)) != len(value):
            twice = next(v for v in value if value.count(v) > 1)
            raise ConfigError(f"{self.name(key)}: {twice!r} is listed twice")
        return tuple(value)

    def path(self, key: str, value: Any = _MISSING) -> Path:
        """``value`` (default: the key's) as a path: ``${VAR}`` expanded, relative to the
        config file's folder; it must exist."""
        value = self.string(key) if value is _MISSING else value
        return resolve_path(value, self.base, self.name(key))


def resolve_path(value: Any, base: Path, name: str) -> Path:
    """A config path: ``${VAR}`` replaced by the environment's value, relative to ``base`` (the
    config file's folder); an error names the key when the variable is unset or nothing is
    there."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: expected a path (a string), found {describe_value(value)}")

    def expand(match: re.Match) -> str:
        variable = match.group(1)
        if variable not in os.environ:
            raise ConfigError(f"{name}: {value!r} uses ${{{variable}}}, which is not set; set "
                              f"it (export {variable}=/path) or write the path itself")
        return os.environ[variable]

    path = Path(_VARIABLE.sub(expand, value)).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        raise ConfigError(f"{name}: {path} does not exist (paths are relative to the config "
                          f"file's folder, {base})")
    return path


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe_value(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


def quoted(choices: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f'"{c}"' for c in choices)
