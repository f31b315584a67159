"""``Record``: typing.NamedTuple's class syntax without its start-up cost, for the modules a cold send loads.

Usage::

    from .records import Record

    class Target(Record):
        scheme: str
        port: int = 443

typing.NamedTuple checks every field's annotation as it builds the class, and under ``from __future__
import annotations`` each annotation is a string it compiles (a ``ForwardRef``): about 0.2 M
instructions per field, some 25 M for the tuples a one-off send creates (bench/bench_coldsend.py).
A Record builds the same ``collections.namedtuple`` (fields, defaults, methods, properties,
docstring, ``_replace``, ``_fields``) and keeps the annotations as they are, unchecked; type
checkers are shown ``typing.NamedTuple`` itself.
"""

import collections

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers take it as True)

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    _SKIP = frozenset(("__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__", "_root"))
    _PROHIBITED = frozenset(("__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
                             "_make", "_replace", "_asdict", "_source"))  # as typing.NamedTuple refuses them

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if namespace.get("_root"):
                return super().__new__(mcls, name, bases, namespace)
            annotations = namespace.get("__annotations__", {})
            fields = list(annotations)
            defaults = []
            for field in fields:
                if field in namespace:
                    defaults.append(namespace[field])
                elif defaults:
                    raise TypeError("%s: field %s without a default follows one with a default" % (name, field))
            cls = collections.namedtuple(name, fields, defaults=defaults, module=namespace.get("__module__"))
            cls.__annotations__ = dict(annotations)
            for key, value in namespace.items():
                if key in _SKIP or key in annotations:
                    continue
                if key in _PROHIBITED:
                    raise AttributeError("%s: cannot overwrite NamedTuple attribute %s" % (name, key))
                setattr(cls, key, value)
            if "__qualname__" in namespace:
                cls.__qualname__ = namespace["__qualname__"]
            return cls

    class Record(metaclass=_RecordMeta):
        _root = True
