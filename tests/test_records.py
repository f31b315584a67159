"""records.Record behaves as typing.NamedTuple for everything the package relies on, without its cost."""

from __future__ import annotations

import unittest
from typing import NamedTuple

from iotpost.records import Record


class Point(Record):
    """A point."""

    x: int
    y: int = 0
    label: str = "p"

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> "Point":
        return self._replace(x=self.x + dx)


def x_and_label(point: Point):
    x, _, label = point  # unpacks as a tuple
    return x, label


class Same(NamedTuple):
    x: int
    y: int = 0
    label: str = "p"


class RecordTests(unittest.TestCase):
    def test_behaves_as_namedtuple(self):
        p = Point(3, label="q")
        self.assertEqual((p.x, p.y, p.label, p.norm1), (3, 0, "q", 3))
        self.assertEqual(p.moved(1), Point(4, 0, "q"))
        self.assertEqual(p, Same(3, 0, "q"))  # a tuple like any other
        self.assertEqual((Point._fields, Point._field_defaults), (Same._fields, Same._field_defaults))
        self.assertEqual(p._asdict(), {"x": 3, "y": 0, "label": "q"})
        self.assertEqual(Point.__doc__, "A point.")
        self.assertEqual(repr(p), "Point(x=3, y=0, label='q')")
        self.assertEqual(Point.__module__, __name__)
        self.assertEqual(list(Point.__annotations__), ["x", "y", "label"])
        with self.assertRaises(AttributeError):
            p.x = 1  # immutable, no __dict__
        with self.assertRaises(AttributeError):
            p.other = 1
        import copy
        import pickle

        self.assertEqual(pickle.loads(pickle.dumps(p)), p)
        self.assertEqual(copy.deepcopy(p), p)
        self.assertEqual(Point._make([1, 2, "z"]), Point(1, 2, "z"))
        self.assertEqual(x_and_label(Point(label="k", x=5)), (5, "k"))
        for bad in ((), (1, 2, 3, 4)):
            with self.subTest(args=bad), self.assertRaises(TypeError):
                Point(*bad)
        with self.assertRaises(TypeError):
            Point(1, x=2)
        with self.assertRaises(TypeError):
            Point(1, z=2)
        with self.assertRaises(ValueError):
            p._replace(z=1)

    def test_refuses_what_namedtuple_refuses(self):
        with self.assertRaises(TypeError):
            class Bad(Record):  # noqa: F841
                a: int = 1
                b: int
        with self.assertRaises(AttributeError):
            class Worse(Record):  # noqa: F841
                a: int

                def _replace(self, **kw):
                    return self

    def test_importing_it_loads_no_typing(self):
        import subprocess
        import sys

        from tests.support import PROJECT_ROOT, cli_env

        probe = "import sys, iotpost.records; print('typing' in sys.modules)"
        proc = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                              cwd=str(PROJECT_ROOT), env=cli_env(), timeout=60)
        self.assertEqual(proc.stdout.strip(), "False", proc.stderr)

if __name__ == "__main__":
    unittest.main()
