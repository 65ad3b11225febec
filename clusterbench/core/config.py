"""The configuration: where it lives, how objects are built from it, and its type checks.

The configs ship inside the package (`clusterbench/conf/`), so an installed wheel runs every
command; `CONFIG_DIR` is that directory on disk, for `hydra.main` and for tests that compose.

Type checks run before any work: Hydra passes `trainer.max_epochs=abc` or
`method.num_clusters=2.5` through as they are; left alone they fail after minutes of kNN mining
inside Lightning, or (2.5 -> 2) not at all. The expected types are read from the annotations of
each node's `_target_` (so a new method or dataset is checked without a schema to keep in step),
plus a few top-level and Trainer keys.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from clusterbench.core.errors import ClusterbenchError, ConfigError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def launch_dir() -> str:
    """Where the command was started: Hydra's `runtime.cwd` inside a job, else the process's cwd.

    `${hydra:runtime.cwd}` alone fails while a multirun launcher resolves `hydra.sweep.dir`,
    before any job (and so any HydraConfig) exists; every path under `paths.root_dir` needs it.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.cwd
    return os.getcwd()


OmegaConf.register_new_resolver("launch_dir", launch_dir, replace=True)


def plain(node: DictConfig | dict | None) -> dict:
    """A resolved plain dict of a config node (None: empty), for code that takes no DictConfig."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Hydra instantiate; a ClusterbenchError raised inside surfaces instead of Hydra's wrapper,
    so the entry point can print it as one line."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ClusterbenchError):
            raise exc.__cause__ from None
        raise


# Keys with a fixed type that no `_target_` annotation describes.
FIXED = {"seed": int, "trainer.max_epochs": int, "trainer.num_nodes": int,
         "trainer.log_every_n_steps": int}  # fmt: skip
CHECKED_GROUPS = ("dataset", "method", "knn", "k_estimation", "refine")


def _accepts(annotation: Any, value: Any) -> bool | None:
    """True/False when the annotation is a plain type (or union of them), None when unknown."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(a, value) for a in typing.get_args(annotation)]
        return None if None in verdicts and not any(verdicts) else any(v for v in verdicts if v)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple):  # list[float]: a sequence whose items the item type accepts
        if not isinstance(value, Sequence) or isinstance(value, str):  # ListConfig included
            return False
        item = (typing.get_args(annotation) or (None,))[0]
        return None if item is None else all(_accepts(item, v) is not False for v in value)
    return None


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (list, tuple):
        return str(annotation).replace("typing.", "")
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def target_types(target: str) -> dict[str, Any]:
    """Parameter annotations of a `_target_` (and of what it forwards `**kwargs` to)."""
    try:
        obj = get_object(target)
    except Exception:
        return {}  # an unknown target is reported by instantiate, with its own message
    hints: dict[str, Any] = {}
    for fn in (getattr(obj, "forwards_kwargs_to", None), obj):
        if fn is None:
            continue
        fn = fn.__init__ if inspect.isclass(fn) else fn
        try:
            hints.update(typing.get_type_hints(fn))
        except Exception:
            continue
    hints.pop("return", None)
    return hints


def check_config(cfg: DictConfig) -> None:
    """Raises ConfigError for the first value whose type the config's consumer cannot take."""
    expected: dict[str, Any] = dict(FIXED)
    for group in CHECKED_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            for name, annotation in target_types(str(node._target_)).items():
                expected.setdefault(f"{group}.{name}", annotation)
    for key, annotation in expected.items():
        value = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
        if isinstance(value, str) and value == "__absent__":
            continue
        if _accepts(annotation, value) is False:
            raise ConfigError(
                f"{key}={value!r} ({type(value).__name__}): expected {_type_name(annotation)}"
            )


def check_fields(settings: Any, prefix: str) -> None:
    """The same check for a settings dataclass, from its `__post_init__`: Hydra builds it from
    `<prefix>:` of the config, and `probe.epochs=2.5` must not silently become 2. An empty
    `prefix`: the fields are top-level keys (`seed`, not `.seed`)."""
    hints = typing.get_type_hints(type(settings))
    for name in settings.__dataclass_fields__:
        value, annotation = getattr(settings, name), hints.get(name)
        if annotation is not None and _accepts(annotation, value) is False:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(
                f"{key}={value!r} ({type(value).__name__}): expected {_type_name(annotation)}"
            )
