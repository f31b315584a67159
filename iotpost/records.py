"""``Record``: typing.NamedTuple's class syntax without its start-up cost, for the modules a cold send loads.

Usage::

    from .records import Record

    class Target(Record):
        scheme: str
        port: int = 443

typing.NamedTuple checks every field's annotation as it builds the class, and under ``from __future__
import annotations`` each annotation is a string it compiles (a ``ForwardRef``, ~0.2 M instructions
per field); collections.namedtuple then compiles a ``__new__`` for each class (~0.3 M more). A
cron job on a Raspberry Pi pays that for every tuple on every start. A Record is a tuple subclass
whose shared methods (``__new__`` with defaults and keywords, ``_replace``, ``_asdict``, ``_make``,
``__repr__``) are written once here, and whose fields are ``operator.itemgetter`` properties: the
same behaviour for everything this package does with its tuples, at a fraction of the cost.
Type checkers are shown ``typing.NamedTuple`` itself.
"""

import operator

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers take it as True)

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    _MISSING = object()
    _SKIP = frozenset(("__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__", "_root"))
    _PROHIBITED = frozenset(("__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
                             "_make", "_replace", "_asdict", "_source"))  # as typing.NamedTuple refuses them

    class _RecordBase(tuple):
        """What every Record shares; a class adds _fields, _field_defaults, _index and its properties."""

        __slots__ = ()
        _fields = ()
        _field_defaults = {}
        _index = {}

        def __new__(cls, *args, **kwargs):
            fields = cls._fields
            if not kwargs and len(args) == len(fields):
                return tuple.__new__(cls, args)  # the common case, kept cheap: a burst makes four per payload
            if len(args) > len(fields):
                raise TypeError("%s takes %d arguments, got %d" % (cls.__name__, len(fields), len(args)))
            values = list(args) + [_MISSING] * (len(fields) - len(args))
            for name, value in kwargs.items():
                at = cls._index.get(name)
                if at is None:
                    raise TypeError("%s got an unexpected keyword argument %r" % (cls.__name__, name))
                if values[at] is not _MISSING:
                    raise TypeError("%s got multiple values for argument %r" % (cls.__name__, name))
                values[at] = value
            for at, value in enumerate(values):
                if value is _MISSING:
                    value = cls._field_defaults.get(fields[at], _MISSING)
                    if value is _MISSING:
                        raise TypeError("%s missing required argument %r" % (cls.__name__, fields[at]))
                    values[at] = value
            return tuple.__new__(cls, values)

        @classmethod
        def _make(cls, iterable):
            values = tuple(iterable)
            if len(values) != len(cls._fields):
                raise TypeError("%s expects %d values, got %d" % (cls.__name__, len(cls._fields), len(values)))
            return tuple.__new__(cls, values)

        def _replace(self, **changes):
            values = list(self)
            for name, value in changes.items():
                at = self._index.get(name)
                if at is None:
                    raise ValueError("got unexpected field name: %r" % name)
                values[at] = value
            return tuple.__new__(type(self), values)

        def _asdict(self):
            return dict(zip(self._fields, self))

        def __repr__(self):
            return "%s(%s)" % (type(self).__name__,
                               ", ".join("%s=%r" % pair for pair in zip(self._fields, self)))

        def __getnewargs__(self):
            return tuple(self)

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if namespace.get("_root"):
                return super().__new__(mcls, name, bases, namespace)
            annotations = namespace.get("__annotations__", {})
            fields = tuple(annotations)
            defaults = {}
            for field in fields:
                if field in namespace:
                    defaults[field] = namespace[field]
                elif defaults:
                    raise TypeError("%s: field %s without a default follows one with a default" % (name, field))
            body = {"__slots__": (), "_fields": fields, "_field_defaults": defaults,
                    "_index": {field: at for at, field in enumerate(fields)},
                    "__annotations__": dict(annotations), "__module__": namespace.get("__module__"),
                    "__qualname__": namespace.get("__qualname__", name)}
            for at, field in enumerate(fields):
                body[field] = property(operator.itemgetter(at), doc="Alias for field number %d" % at)
            for key, value in namespace.items():
                if key in _SKIP or key in annotations:
                    continue
                if key in _PROHIBITED:
                    raise AttributeError("%s: cannot overwrite NamedTuple attribute %s" % (name, key))
                body[key] = value
            return type(name, (_RecordBase,), body)

    class Record(metaclass=_RecordMeta):
        _root = True
