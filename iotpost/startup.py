"""Start-up without the cyclic garbage collector, for the commands a cron job runs once a minute.

Usage: ``pause_gc()`` first thing in an entry script (before the imports); ``resume_gc()`` where
the long part of a run begins (delivery.Sender.run).

Start-up allocates tens of thousands of objects (modules, classes, functions) and none of them is
garbage, yet each allocation burst triggers a collection that walks them all: about 10 M of a
one-off send's ~215 M instructions (bench/bench_coldsend.py). A send that lasts days (--period)
collects again from the first payload on; what start-up made is frozen, never scanned again.
"""

import gc


def pause_gc() -> None:
    gc.disable()


def resume_gc() -> None:
    """Collect again from here, if pause_gc() paused it (in-process callers, such as tests, are left alone)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
