"""Typed dataclass configs: YAML files plus ``key=value`` dotted overrides.

Every config is a dataclass whose fields carry a docstring (the string literal right below the field,
as in litgpt). ``field_docs`` reads those docstrings so ``--help`` can explain every option.

    cfg = load_config(TrainConfig, "configs/demo.yaml", ["optim.lr=1e-4", "strategy=lora"])

An unknown key is an error that names the key and lists the valid ones. Every numeric field declares
its allowed range next to it (:func:`ranged`); the range is checked when the dataclass is built (in
Python or from YAML/overrides) and by the CLI's numeric flags (:func:`arg_type`), and a value outside
it is an error naming the dotted key and the range::

    lr: float = ranged(1e-4, gt=0)   # optim.lr=-1 -> "optim.lr must be > 0, got -1"
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from speechkeep.errors import ConfigError, RangeError

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Ranges of numeric settings: one mechanism for every config dataclass and every numeric CLI flag.


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: optional bounds ``ge`` (>=), ``gt`` (>), ``le`` (<=),
    ``lt`` (<). Floats must also be finite (NaN and infinity are never allowed)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        lo = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None)
        hi = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None)
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if hi:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return "a finite number"

    def ok(self, value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not ((self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt)
                    or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt))

    def check(self, value: Any, key: str) -> None:
        """Raise :class:`RangeError` naming ``key`` unless ``value`` is None or in range (for a mapping
        or a list: each of its values, named ``key.name`` / ``key[i]``)."""
        if isinstance(value, dict):
            for k, v in value.items():
                self.check(v, f"{key}.{k}")
            return
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.check(v, f"{key}[{i}]")
            return
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not self.ok(value):
            raise RangeError(key, value, self.describe())


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with an allowed range (None is always allowed for an optional field; for a
    mapping or list of numbers the range applies to each value)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"range": Range(ge=ge, gt=gt, le=le, lt=lt)})


def field_range(cls: type, name: str) -> Range | None:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("range")
    raise KeyError(name)


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Check every ranged field of dataclass instance ``obj`` (not recursive: nested configs check
    themselves when they are built). Call it from ``__post_init__``."""
    for f in dataclasses.fields(obj):
        r = f.metadata.get("range")
        if r is not None:
            r.check(getattr(obj, f.name), prefix + f.name)


SECTIONS_FIELD = "sections"


def config_sections(cls: type) -> dict[str, type]:
    """The plugin sections of config class ``cls``: top-level keys contributed by plugins, each with
    its own settings dataclass (e.g. one per training strategy: ``lora.r=16``).

    A config class opts in with a static method ``__config_sections__()`` returning ``{key: dataclass}``
    (looked up each time, so a plugin registered later is covered) and a field named ``sections``
    (``dict[str, Any]``) that holds the built settings. YAML, ``key=value`` overrides, ``--help`` and
    :func:`config_to_dict` treat every section exactly like a nested config field; the core config
    class names no plugin."""
    fn = getattr(cls, "__config_sections__", None)
    return dict(fn()) if fn is not None else {}


class Checked:
    """Mixin of config dataclasses: ranges are checked when an instance is built (and, for a config with
    plugin sections, every registered section not given gets its defaults)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        secs = config_sections(type(self))
        if secs:
            given = getattr(self, SECTIONS_FIELD)
            for k, v in given.items():
                if k not in secs:
                    raise ConfigError(f"unknown config section '{k}'; valid: {', '.join(secs)}")
                if not isinstance(v, secs[k]):
                    raise ConfigError(f"{k}: expected {secs[k].__name__}, got {type(v).__name__}")
            setattr(self, SECTIONS_FIELD, {k: given[k] if k in given else cls() for k, cls in secs.items()})


def arg_type(rng: Range | tuple[type, str], tp: type = int):
    """An argparse ``type=`` that parses ``tp`` and checks a :class:`Range` (or the range of the
    dataclass field ``(cls, name)``): the error names the flag and the allowed range."""
    if isinstance(rng, tuple):
        cls, name = rng
        tp = _unwrap_optional(_hints(cls)[name])[0]
        rng = field_range(cls, name)

    def parse(raw: str):
        try:
            value = tp(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot read {raw!r} as {tp.__name__}") from None
        if rng is not None and not rng.ok(value):
            raise argparse.ArgumentTypeError(f"must be {rng.describe()}, got {raw}")
        return value

    parse.__name__ = tp.__name__
    return parse


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Map field name -> docstring written right below the field in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, with an error naming the key."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional or tp is Any:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {getattr(tp, '__name__', tp)})")
    origin = typing.get_origin(tp)
    try:
        if tp is Any:
            return value
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            return config_from_dict(tp, value, prefix=key + ".")
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
            return value
        if origin in (list, tuple):
            (item_tp, *_) = typing.get_args(tp) or (Any,)
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else [
                    v for v in value.split(",") if v != ""
                ]
            if not isinstance(value, (list, tuple)):
                value = [value]
            out = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
            return tuple(out) if origin is tuple else out
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            _, vt = typing.get_args(tp) or (Any, Any)
            return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}: cannot read {value!r} as {getattr(tp, '__name__', str(tp))}"
        ) from None
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    secs = config_sections(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and not (secs and f.name == SECTIONS_FIELD)]
    names += [k for k in secs if k not in names]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys"
            f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k in secs:
            if v is not None and not isinstance(v, dict):
                raise ConfigError(f"{prefix}{k}: expected a mapping, got {v!r}")
            kwargs.setdefault(SECTIONS_FIELD, {})[k] = config_from_dict(secs[k], v or {}, prefix=prefix + k + ".")
            continue
        # A partial mapping for a nested config updates that field's own default (its default_factory,
        # e.g. AlignConfig.ctc.model's CTC adaptor), not the nested class's plain defaults.
        default = _field_default(fields[k])
        if isinstance(v, dict) and dataclasses.is_dataclass(default):
            v = _merge_into(default, v)
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    try:
        obj = cls(**kwargs)
    except RangeError as e:
        raise RangeError(prefix + e.key, e.value, e.allowed) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None
    return obj


def _merge_into(default: Any, data: dict[str, Any]) -> dict[str, Any]:
    """``default`` (a config instance) as a dict, updated by ``data``: nested configs merge key by key,
    every other value (a mapping such as ``data.tasks`` included) is replaced as a whole."""
    out = config_to_dict(default)
    for k, v in data.items():
        try:
            sub = getattr(default, k)
        except AttributeError:
            sub = None
        out[k] = _merge_into(sub, v) if isinstance(v, dict) and dataclasses.is_dataclass(sub) else v
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), for YAML/JSON; plugin sections appear as
    top-level keys, exactly like nested config fields (``{"lora": {"r": 8, ...}}``)."""
    import copy

    def fix(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            out = {}
            secs = config_sections(type(x))
            for f in dataclasses.fields(x):
                v = getattr(x, f.name)
                if secs and f.name == SECTIONS_FIELD:
                    out.update({k: fix(s) for k, s in v.items()})
                else:
                    out[f.name] = fix(v)
            return out
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [fix(v) for v in x]
        return copy.deepcopy(x)

    return fix(cfg)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": "1"}, "c": "x"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key=value")
        key, raw = ov.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {ov!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (int, float)) and not isinstance(value, bool) and raw.strip().lower().startswith(("0x",)):
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r} conflicts with an earlier override of '{p}'")
        node[parts[-1]] = value
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from an optional YAML file, then apply dotted ``key=value`` overrides, then
    ``values`` (top-level key -> already-typed value: the command's option flags, which win)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        if not p.is_file():
            raise ConfigError(f"config file is not a regular file: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
        data = loaded
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
    if values:
        data = {**data, **values}
    try:
        return config_from_dict(cls, data)
    except RangeError as e:
        if path is not None:
            raise RangeError(f"{path}: {e.key}", e.value, e.allowed) from None
        raise
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise


def config_help(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """Rows (key, type, default, doc) for every field, nested dataclasses flattened with dots.

    The defaults shown are the ones used: a nested config's come from its field's own default (e.g.
    ``AlignConfig.ctc``'s factory), not from the nested class's plain defaults (``defaults``: that
    instance, when recursing)."""
    rows = []
    hints = _hints(cls)
    docs = field_docs(cls)
    secs = config_sections(cls)
    for f in dataclasses.fields(cls):
        if secs and f.name == SECTIONS_FIELD:
            for k, sec in secs.items():
                rows.extend(config_help(sec, prefix + k + ".", (getattr(defaults, SECTIONS_FIELD, None) or {}).get(k)))
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        if _is_dataclass_type(tp):
            rows.extend(config_help(tp, prefix + f.name + ".", default if dataclasses.is_dataclass(default) else None))
            continue
        tname = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
        doc = docs.get(f.name, "")
        rng = f.metadata.get("range")
        if rng is not None:
            doc = f"{doc} Allowed: {rng.describe()}." if doc else f"Allowed: {rng.describe()}."
        rows.append((prefix + f.name, tname, repr(default), doc))
    return rows


def format_config_help(cls: type) -> str:
    rows = config_help(cls)
    lines = []
    for key, tname, default, doc in rows:
        lines.append(f"  {key} ({tname}, default {default})")
        if doc:
            lines.extend("      " + l for l in textwrap.wrap(doc, 90))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# One command-line mechanism for every job command: [CONFIG.yaml] [key=value ...], options from the
# command's config dataclass, --help generated from it, and the command's historical flags as aliases.


_NO_CONST = object()


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag that is an alias of config key ``key`` (``--max-new-tokens 8`` = ``max_new_tokens=8``).

    ``flag``: the option string (default ``--`` + key with dashes); ``const``: the value a flag without an
    argument sets (e.g. ``--no-progress`` -> progress=false); ``kwargs``: argparse overrides
    (``nargs``, ``type``, ``metavar``, ...)."""

    key: str
    flag: str | None = None
    const: Any = _NO_CONST
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def dest(self) -> str:
        return "flag__" + self.option.lstrip("-").replace("-", "_")


def _flag_kwargs(cls: type, f: Flag) -> dict[str, Any]:
    """argparse keyword arguments of an alias flag, from the config field's type, range and docstring."""
    hints = _hints(cls)
    tp, _ = _unwrap_optional(hints[f.key])
    origin = typing.get_origin(tp)
    kw: dict[str, Any] = {"default": None}
    if f.const is not _NO_CONST:
        kw.update(action="store_const", const=f.const)
    elif tp is bool:
        kw.update(action=argparse.BooleanOptionalAction)
    elif origin is typing.Literal:
        kw.update(choices=list(typing.get_args(tp)))
    elif origin in (list, tuple):
        kw.update(nargs="+")
    elif tp in (int, float):
        kw.update(type=arg_type((cls, f.key)), metavar="N")
    kw.update(f.kwargs)
    if "action" not in kw and "metavar" not in kw and "choices" not in kw:
        kw["metavar"] = f.key.upper()
    doc = field_docs(cls).get(f.key, "")
    if f.const is not _NO_CONST:
        alias = f"the same as {f.key}={str(f.const).lower() if isinstance(f.const, bool) else f.const}"
    else:
        alias = f"key {f.key}, default {_field_default_repr(cls, f.key)}"
    kw["help"] = (f"{doc} ({alias})" if doc else f"({alias})").replace("%", "%%")
    return kw


def _split_numbers(cls: type, key: str, value: Any) -> Any:
    """A flag of a list of numbers takes them space- or comma-separated (``--sweep 0.5 1 3`` or ``--sweep 0.5,1,3``)."""
    tp, _ = _unwrap_optional(_hints(cls)[key])
    if typing.get_origin(tp) not in (list, tuple) or not isinstance(value, list):
        return value
    args = typing.get_args(tp)
    if not args or args[0] not in (int, float):
        return value
    return [x.strip() for v in value for x in (v.split(",") if isinstance(v, str) else [v]) if str(x).strip()]


def _field_default_repr(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return repr(_field_default(f))
    raise KeyError(name)


def add_config_arguments(p: argparse.ArgumentParser, cls: type, flags: typing.Sequence[Flag | str] = (),
                         positional: str | None = None) -> None:
    """Give parser ``p`` the job-command interface of config class ``cls``: an optional YAML file, dotted
    ``key=value`` overrides, the alias ``flags`` (a :class:`Flag` or a key name), and an epilog listing
    every key with its real default and docstring. ``positional``: a list key that bare arguments (neither
    a YAML file nor key=value) fill, e.g. ``importance-compare RUN RUN``."""
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (optional; a key=value here is taken as an override)")
    p.add_argument("overrides", nargs="*", default=[],
                   help="dotted key=value overrides of the config keys listed below" +
                        (f"; bare arguments are {positional}" if positional else ""))
    seen = {"overwrite"}
    for spec in flags:
        f = spec if isinstance(spec, Flag) else Flag(spec)
        seen.add(f.key)
        p.add_argument(f.option, dest=f.dest, **_flag_kwargs(cls, f))
    names = {x.name for x in dataclasses.fields(cls)}
    if "overwrite" in names:
        p.add_argument("--overwrite", dest="flag__overwrite", action="store_const", const=True, default=None,
                       help="write into an output directory that is not empty and not this command's earlier output "
                            "(the same as overwrite=true)")
    p.set_defaults(_config_cls=cls, _config_flags=[s if isinstance(s, Flag) else Flag(s) for s in flags]
                   + ([Flag("overwrite", "--overwrite", True)] if "overwrite" in names else []),
                   _config_positional=positional)
    p.epilog = "config keys (set in the YAML file or as key=value):\n" + format_config_help(cls)
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def config_from_args(args: argparse.Namespace, cls: type[T] | None = None) -> tuple[T, str | None]:
    """The command's config from parsed arguments (YAML, then key=value overrides, then alias flags,
    which win); returns (config, the YAML path or None)."""
    cls = cls or args._config_cls
    path, overrides, bare = args.config, list(args.overrides), []
    if path is not None and not (Path(path).is_file() and Path(path).suffix in (".yaml", ".yml")):
        if "=" in path and not Path(path).exists():
            overrides.insert(0, path)
            path = None
        elif args._config_positional:
            bare.append(path)
            path = None
    positional = args._config_positional
    if positional:
        bare += [o for o in overrides if "=" not in o]
        overrides = [o for o in overrides if "=" in o]
    values: dict[str, Any] = {}
    if bare:
        values[positional] = bare
    for f in args._config_flags:
        v = getattr(args, f.dest, None)
        if v is not None:
            values[f.key] = _split_numbers(cls, f.key, v)
    return load_config(cls, path, overrides, values=values), path
