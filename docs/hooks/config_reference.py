"""The configuration reference, generated: every group of ``conf/`` and every option, each key with its type, its
default as composed and its allowed values (from the schemas in ``made_exp.runs.config``, ``RANGES`` and the Enums
of ``made_exp.core.choices``)."""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from made_exp.runs.config import CONFIG_DIR, RANGES

HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper")


@dataclasses.dataclass(frozen=True)
class Key:
    """One row of a table: a dotted key, its type, its default as composed (as written), what it may be."""

    key: str
    type: str
    default: str
    allowed: str


def groups() -> list[str]:
    """Every config group under ``conf/``, the Hydra launcher and sweeper groups last."""
    conf = Path(CONFIG_DIR)
    made = sorted(path.name for path in conf.iterdir() if path.is_dir() and path.name != "hydra")
    return made + [group for group in HYDRA_GROUPS if (conf / group).is_dir()]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def description(group: str, option: str) -> str:
    """The first line of the comment that opens the option's YAML file."""
    for line in (Path(CONFIG_DIR) / group / f"{option}.yaml").read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and not text.startswith("# @package"):
            return text.lstrip("#").strip()
        if text and not text.startswith("#"):
            break
    return ""


def is_global(group: str, option: str) -> bool:
    """An option that sets keys anywhere (``# @package _global_``), not one node named after its group."""
    return "# @package _global_" in (Path(CONFIG_DIR) / group / f"{option}.yaml").read_text()


def node_path(group: str) -> str:
    """Where a group's option lands in the composed config: ``hydra/launcher`` -> ``hydra.launcher``."""
    return group.replace("/", ".")


def keys(cfg: DictConfig, path: str) -> list[Key]:
    """A row for every leaf under ``path`` of ``cfg`` (its own dotted path; ``""``: the whole config)."""
    node = OmegaConf.select(cfg, path) if path else cfg
    return [
        Key(
            full,
            _type_name(_annotation(parent, name), parent, name),
            _default(parent, name),
            _allowed(full, parent, name),
        )
        for parent, name, full in _leaves(node, path)
    ]


def _leaves(node: DictConfig, path: str) -> Iterator[tuple[DictConfig, str, str]]:
    """``(parent node, key, dotted path)`` of every leaf under ``node`` (at ``path``)."""
    for name in node.keys():
        child = node._get_node(name)
        full = f"{path}.{name}" if path else str(name)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            yield from _leaves(node[name], full)
        else:
            yield node, str(name), full


def _annotation(parent: DictConfig, name: str) -> object:
    """The schema's type of ``parent.name``: the dataclass field's annotation, or None outside a schema."""
    schema = OmegaConf.get_type(parent)
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    try:
        return typing.get_type_hints(schema).get(name)
    except (NameError, TypeError):
        return next((field.type for field in dataclasses.fields(schema) if field.name == name), None)


def _type_name(annotation: object, parent: DictConfig, name: str) -> str:
    if annotation is None:
        value = parent._get_node(name)._value()
        if isinstance(value, str) and "${" in value:
            return "str"
        return "null" if value is None else type(_plain(parent, name)).__name__
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "str (choice)"
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    for choice in _enums(annotation):
        text = text.replace(f"{choice.__module__}.{choice.__qualname__}", "str (choice)")
    return text.replace("NoneType", "None")


def _enums(annotation: object) -> list[type[enum.Enum]]:
    return [arg for arg in typing.get_args(annotation) if isinstance(arg, type) and issubclass(arg, enum.Enum)]


def _plain(parent: DictConfig, name: str) -> object:
    value = parent._get_node(name)._value()
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=False)
    return value.value if isinstance(value, enum.Enum) else value


def _default(parent: DictConfig, name: str) -> str:
    """The composed value as written (an interpolation stays one: ``${seeds.evaluation}``)."""
    node = parent._get_node(name)
    if node._is_missing():
        return "??? (set by made-train)"
    return spelled(_plain(parent, name))


def spelled(value: object) -> str:
    """A value as a Hydra override spells it: ``null``, ``true``, ``[500,500]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(spelled(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {spelled(v)}" for k, v in value.items()) + "}"
    return str(value)


def _allowed(full: str, parent: DictConfig, name: str) -> str:
    """The range from ``RANGES`` and the choices of an Enum type."""
    parts = []
    annotation = _annotation(parent, name)
    if full in RANGES:
        lowest, inclusive = RANGES[full]
        parts.append(f"{'>=' if inclusive else '>'} {lowest}")
    choices = [annotation] if isinstance(annotation, type) and issubclass(annotation, enum.Enum) else []
    for choice in choices + _enums(annotation):
        parts.append(", ".join(f"`{member.value}`" for member in choice))
    return "; ".join(parts)


def changed_keys(cfg: DictConfig, default: DictConfig) -> set[str]:
    """The leaves of ``cfg`` (the hydra node aside) whose value differs from ``default``'s or that it lacks."""

    def written(config: DictConfig) -> dict[str, object]:
        return {
            full: _plain(parent, name) for parent, name, full in _leaves(config, "") if not full.startswith("hydra.")
        }

    before = written(default)
    missing = object()
    return {key for key, value in written(cfg).items() if before.get(key, missing) != value}


def table(rows: list[Key]) -> str:
    lines = ["| key | type | default | allowed |", "|---|---|---|---|"]
    for row in rows:
        default = row.default.replace("|", "\\|")
        kind = row.type.replace("|", "\\|")
        lines.append(f"| `{row.key}` | {kind} | `{default}` | {row.allowed} |")
    return "\n".join(lines)


def reference(compose: Callable[[tuple[str, ...]], DictConfig]) -> str:
    """The whole reference, as Markdown; ``compose(overrides)``: made-train's config with the ``hydra`` node."""
    default = compose(())
    choices = OmegaConf.select(default, "hydra.runtime.choices") or {}
    sections = ["## Top level", "Keys of `conf/train.yaml` itself (`made-train seed=3 module.num_samples=0`).", ""]
    top = [key for key in keys(default, "") if key.key.split(".", 1)[0] not in _group_nodes()]
    sections += [table(top), ""]
    for group in groups():
        chosen = choices.get(group)
        header = f"## {group}"
        sections += [header, f"Options: {', '.join(f'`{group}={option}`' for option in options(group))}."]
        sections.append(f"Default: `{group}={chosen}`." if chosen else f"Default: none (`{group}=...` to choose).")
        sections.append("")
        for option in options(group):
            cfg = compose((f"{group}={option}",))
            sections += [f"### {group}={option}", description(group, option), ""]
            node = OmegaConf.select(cfg, node_path(group), default=None)
            if not is_global(group, option):
                has_keys = isinstance(node, DictConfig) and len(node) > 0
                sections += [table(keys(cfg, node_path(group))) if has_keys else "(no keys: nothing is set up)", ""]
            else:
                differs = changed_keys(cfg, default)
                own = node_path(group) + "."
                rows = [key for key in keys(cfg, "") if key.key.startswith(own) or key.key in differs]
                intro = f"Sets keys anywhere in the config: its own `{group}.*` and those it changes elsewhere:"
                sections += [intro, "", table(rows) if rows else "(no key changes)", ""]
        if chosen and chosen not in options(group):  # Hydra's own default (basic launcher, basic sweeper)
            sections += [f"### {group}={chosen}", "Hydra's own, the default.", ""]
            sections += [table(keys(default, node_path(group))), ""]
    return "\n".join(sections)


def _group_nodes() -> set[str]:
    return {group for group in groups() if "/" not in group} | {"hydra"}
