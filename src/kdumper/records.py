"""Records: dataclass-like classes that cost nothing to define at import time.

``@dataclass`` compiles its methods (``__init__``, ``__repr__``, ``__eq__``, and for a frozen class
``__setattr__``, ``__delattr__``, ``__hash__``) with ``exec`` when the class statement runs: ~0.2 ms
a class, ~6 ms for the twenty classes that ``kdumper save`` imports before it can start its
workers, on the one CPU everything waits for. :func:`record` gives a class the same methods as
plain functions that read the class's field list instead, and nothing is compiled. Type checkers
see a dataclass (``dataclass_transform``, PEP 681).

Supported: fields with defaults, ``dataclasses.field(default=..., default_factory=...)``,
``frozen=True`` (assignments raise ``dataclasses.FrozenInstanceError``; hashable), ``ClassVar``
annotations (not fields), equality and repr as a dataclass has them, :func:`replace` and
:func:`as_dict` (shallow). Not supported: inheritance between records, ``__post_init__``,
keyword-only fields, ordering; use ``@dataclass`` for those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, FrozenInstanceError, field
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

_FIELDS = "__record_fields__"


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _build(cls: type[T], frozen: bool) -> type[T]:
    if any(hasattr(base, _FIELDS) for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__name__}: records do not inherit from records")
    names: list[str] = []
    defaults: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    # the class's own annotations (inspect.get_annotations would import inspect: ~4 ms)
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for name, annotation in own.items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        if isinstance(value, Field):
            if value.default_factory is not MISSING:
                factories[name] = value.default_factory
            value = value.default
            if value is MISSING:
                delattr(cls, name)  # (as a dataclass: no class attribute without a default)
            else:
                setattr(cls, name, value)
        if value is not MISSING:
            defaults[name] = value
        elif names and (names[-1] in defaults or names[-1] in factories) and name not in factories:
            raise TypeError(f"{cls.__name__}: non-default field {name!r} follows a default one")
        names.append(name)
    fields = tuple(names)
    count = len(fields)
    qualname = cls.__qualname__
    put = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > count:
            raise TypeError(f"{qualname}() takes {count} positional arguments, {len(args)} given")
        for name, value in zip(fields, args, strict=False):
            put(self, name, value)
        for name in fields[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in defaults:
                value = defaults[name]
            elif name in factories:
                value = factories[name]()
            else:
                raise TypeError(f"{qualname}() missing argument {name!r}")
            put(self, name, value)
        if kwargs:
            raise TypeError(f"{qualname}() got unexpected or repeated arguments {sorted(kwargs)}")

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
        return f"{qualname}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in fields)

    cls.__init__ = __init__  # type: ignore[misc, method-assign]
    cls.__repr__ = __repr__  # type: ignore[assignment, method-assign]
    cls.__eq__ = __eq__  # type: ignore[assignment, method-assign]
    if frozen:

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self: Any, name: str) -> None:
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in fields))

        cls.__setattr__ = __setattr__  # type: ignore[assignment, method-assign]
        cls.__delattr__ = __delattr__  # type: ignore[assignment, method-assign]
        cls.__hash__ = __hash__  # type: ignore[assignment, method-assign]
    else:
        cls.__hash__ = None  # type: ignore[assignment]  # mutable and comparable: unhashable
    setattr(cls, _FIELDS, fields)
    return cls


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """Make ``cls`` a record: ``@record`` or ``@record(frozen=True)`` (see the module doc)."""
    if cls is None:
        return lambda c: _build(c, frozen)
    return _build(cls, frozen)


def record_fields(obj: object) -> tuple[str, ...]:
    """The field names of a record (class or instance), in order."""
    found: tuple[str, ...] = getattr(obj, _FIELDS)
    return found


def as_dict(obj: object) -> dict[str, Any]:
    """A record's fields as a dict (values as they are: not copied, not converted)."""
    return {name: getattr(obj, name) for name in record_fields(obj)}


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record ``obj`` with ``changes`` (as ``dataclasses.replace``)."""
    unknown = set(changes) - set(record_fields(obj))
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no fields {sorted(unknown)}")
    return type(obj)(**{**as_dict(obj), **changes})
