"""What is wrong with a configuration, said in one line: a config file's keys that are no
setting, and a settings validation error named as the file spells each setting."""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ValidationError


def setting_names(settings: type[BaseModel]) -> dict[str, str]:
    """Every name a setting is known by in a config file (lower case): its own and its
    environment names (`COMFYRUN_QUEUE_MAX`, `SQLITE_DB_PATH`), each to its own name."""
    names: dict[str, str] = {}
    for name, field in settings.model_fields.items():
        names[name] = name
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names.setdefault(choice.lower(), name)
    return names


def check_config_keys(toml_path: Path, settings: type[BaseModel]) -> None:
    """ValueError (one line) for a TOML file comfyrun cannot read, or a top-level key that is no
    setting: a misspelt one (`queue_mx`) or a table (`[server]`) was ignored without a word,
    and its setting kept its default."""
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the config file {toml_path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {toml_path} is not valid TOML: {exc}") from None
    known = setting_names(settings)
    for key in data:
        if key.lower() not in known:
            near = difflib.get_close_matches(key.lower(), sorted(set(known.values())), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"{toml_path}: {key!r} is not a setting{hint}")


def describe_invalid(exc: ValidationError, settings: type[BaseModel]) -> str:
    """A settings validation error as one line, each problem named as in the config file
    (`queue_max: …`, `backends[0].port: …`), not by pydantic's dump of locations and links."""
    names = setting_names(settings)
    parts: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        where = ""
        loc = list(error["loc"])
        if len(loc) > 1 and loc[-1] in UNION_TAGS:  # one error per member of a union
            loc.pop()
        for item in loc:
            if isinstance(item, int):
                where += f"[{item}]"
            else:
                label = names.get(str(item).lower(), str(item))
                where += f".{label}" if where else label
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] not in ("value_error", "missing", "extra_forbidden"):
            value = error.get("input")
            if isinstance(value, (str, int, float, bool)) or value is None:
                message += f" (got {value!r})"
        if error["type"] == "extra_forbidden":
            message = "is not a setting of a backend"
        said = parts.setdefault(where, [])
        if message not in said:
            said.append(message)
    joined = {
        where: " or ".join([said[0], *(m.removeprefix("Input should be ") for m in said[1:])])
        for where, said in parts.items()
    }
    return "; ".join(f"{where}: {text}" if where else text for where, text in joined.items())


#: The locations pydantic gives each member of a union (a label is a str, int, float or bool).
UNION_TAGS = frozenset({"str", "int", "float", "bool"})


__all__ = ["check_config_keys", "describe_invalid", "setting_names"]
