"""kdumper.records: the dataclass-like classes of the capture path behave as dataclasses do."""

from __future__ import annotations

import dataclasses
import pickle
import re
from dataclasses import field
from typing import ClassVar

import pytest

from kdumper.records import as_dict, record, record_fields, replace


@record
class Point:
    """A mutable record."""

    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)
    unit: ClassVar[str] = "px"


@record(frozen=True)
class Key:
    """A frozen record."""

    name: str
    size: int = field(default=8)


@dataclasses.dataclass
class DataPoint:
    """The dataclass that Point mirrors."""

    x: int
    y: int = 2
    tags: list[str] = dataclasses.field(default_factory=list)
    unit: ClassVar[str] = "px"


def test_init_like_a_dataclass() -> None:
    for args, kwargs in [((1,), {}), ((1, 3), {}), ((), {"x": 1, "tags": ["a"]}), ((1,), {"y": 5})]:
        ours, theirs = Point(*args, **kwargs), DataPoint(*args, **kwargs)  # type: ignore[arg-type]
        assert as_dict(ours) == dataclasses.asdict(theirs)
        assert repr(ours) == repr(theirs).replace("DataPoint", "Point")
    assert record_fields(Point) == ("x", "y", "tags")  # the ClassVar is not a field
    assert Point.unit == "px" and Point.y == 2
    assert not hasattr(Point, "tags")  # a factory leaves no class attribute, as in a dataclass
    a, b = Point(1), Point(1)
    assert a.tags is not b.tags  # one new list each


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing argument 'x'"),
        ((1, 2, [], 4), {}, "takes 3 positional arguments"),
        ((1,), {"z": 1}, "unexpected or repeated arguments ['z']"),
        ((1,), {"x": 1}, "unexpected or repeated arguments ['x']"),
    ],
)
def test_wrong_arguments(args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Point(*args, **kwargs)  # type: ignore[arg-type]


def test_equality_hash_and_frozen() -> None:
    assert Point(1) == Point(1) and Point(1) != Point(2)
    assert Point(1) != DataPoint(1)  # another class is never equal
    with pytest.raises(TypeError):
        hash(Point(1))  # mutable and comparable: unhashable, as a dataclass
    k = Key("a")
    assert k == Key("a", 8) and hash(k) == hash(Key("a")) and len({k, Key("a"), Key("b")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.size = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del k.name  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(k)) == k and pickle.loads(pickle.dumps(Point(4))) == Point(4)


def test_replace() -> None:
    k = replace(Key("a"), size=16)
    assert k == Key("a", 16)
    with pytest.raises(TypeError, match="no fields"):
        replace(k, colour=1)


def test_refused_definitions() -> None:
    with pytest.raises(TypeError, match="non-default field 'b'"):

        @record
        class Bad:
            a: int = 1
            b: int

    with pytest.raises(TypeError, match="do not inherit"):

        @record
        class Child(Point):
            z: int = 0
