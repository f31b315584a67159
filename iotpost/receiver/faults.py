"""Fault injection for the twin: fail the way real networks and platforms fail, on purpose.

Usage: ``twin.faults = FaultPlan.script(["503", "reset", None])``  (then: normal answers)

A plan decides, for each POST the twin receives, whether one fault applies. Faults exist so the
senders' retry, idempotency and spool logic can be tested against every way an answer can be lost:

- ``"503"``, ``"429"``: JSON error with ``Retry-After``; the request is NOT processed or stored.
- ``"error"``: an exception inside the handler, so the normal 500 path answers; nothing stored.
- ``"drop"``: the connection is reset before processing; nothing stored, no answer.
- ``"delay"``: sleep ``delay`` seconds, then process and answer normally.
- ``"reset"``: process and store, then reset the connection (SO_LINGER 0): the answer is lost.
- ``"empty"``: process and store, then close without writing a byte.
- ``"malformed"``: process and store, then write bytes that are not HTTP and close.
- ``"dribble"``: process and store, then write the right answer in small pieces over
  ``dribble_seconds`` (for client read timeouts).
- any other 4xx/5xx status as three digits (``"422"``, ``"500"``, ``"401"``...): that status with a
  JSON error, not processed (``Retry-After`` only on 429 and 503).

``FaultPlan.poison(b"marker")`` fails every POST whose body holds the marker (500 by default) and
no other: a payload the platform can never store, like a TLINK push whose ``rawData`` is longer
than the reference receiver's column, while every other payload gets through.
"""

from __future__ import annotations

import random as _random
import re
import threading
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Union

FAULT_KINDS = ("503", "429", "error", "drop", "delay", "reset", "empty", "malformed", "dribble")
# These answer (or hang up) instead of processing: the request is never stored.
BEFORE_PROCESSING = frozenset({"503", "429", "error", "drop"})
# These process and store normally, then spoil the answer: the "did it arrive?" cases.
AFTER_PROCESSING = frozenset({"reset", "empty", "malformed", "dribble"})
# What a random plan draws from unless told otherwise: every fault a retrying sender must survive
# quickly (no delay/dribble, which only slow a test down).
DEFAULT_RANDOM_KINDS = ("503", "429", "error", "reset", "empty", "malformed")


_STATUS = re.compile(r"^[45][0-9][0-9]$")


def status_fault(kind: Optional[str]) -> Optional[int]:
    """The HTTP status a fault answers with instead of processing ("503" -> 503), else None."""
    return int(kind) if kind is not None and _STATUS.match(kind) else None


def check_kinds(kinds: Iterable[Optional[str]]) -> List[Optional[str]]:
    """Reject unknown fault names early, naming the ones we know ("ok" means no fault)."""
    checked: List[Optional[str]] = []
    for kind in kinds:
        if kind is None or kind == "ok":
            checked.append(None)
        elif kind in FAULT_KINDS or (isinstance(kind, str) and _STATUS.match(kind)):
            checked.append(kind)
        else:
            raise ValueError("unknown fault %r (known: %s, or a 4xx/5xx status)" % (kind, ", ".join(FAULT_KINDS)))
    return checked


class FaultPlan:
    """Which fault, if any, the next POST gets; thread-safe, reproducible with a seed or a script."""

    def __init__(
        self,
        *,
        script: Optional[Sequence[Optional[str]]] = None,
        rate: float = 0.0,
        kinds: Sequence[str] = DEFAULT_RANDOM_KINDS,
        seed: Optional[int] = None,
        retry_after: Union[int, str] = 1,
        delay: float = 0.2,
        dribble_seconds: float = 0.5,
        poison: Optional[bytes] = None,
        poison_fault: str = "500",
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1, not %r" % rate)
        self._script = check_kinds(script) if script is not None else None
        self._kinds = [k for k in check_kinds(kinds) if k is not None]
        if rate > 0 and not self._kinds:
            raise ValueError("a random fault plan needs at least one fault kind")
        self.rate = rate
        self.retry_after = retry_after
        self.delay = delay
        self.dribble_seconds = dribble_seconds
        self.poison = poison
        self.poison_fault = check_kinds([poison_fault])[0] or "500"
        self._rng = _random.Random(seed)
        self._lock = threading.Lock()
        self._position = 0
        self._applied: List[str] = []
        self._drawn = 0

    @classmethod
    def random(
        cls,
        rate: float = 0.3,
        kinds: Sequence[str] = DEFAULT_RANDOM_KINDS,
        seed: Optional[int] = 7,
        **options: object,
    ) -> "FaultPlan":
        """Each POST gets a fault with probability ``rate``, drawn from ``kinds`` (seeded)."""
        return cls(rate=rate, kinds=kinds, seed=seed, **options)  # type: ignore[arg-type]

    @classmethod
    def script(cls, steps: Iterable[Optional[str]], **options: object) -> "FaultPlan":
        """The next POSTs get these faults in order (None: answer normally); then no faults."""
        return cls(script=list(steps), **options)  # type: ignore[arg-type]

    @classmethod
    def poison(cls, marker: bytes, fault: str = "500", **options: object) -> "FaultPlan":
        """Every POST whose body contains ``marker`` gets ``fault``; every other POST is served."""
        return cls(poison=marker, poison_fault=fault, **options)  # type: ignore[arg-type]

    def draw(self, body: Optional[bytes] = None) -> Optional[str]:
        """The fault for the POST being handled now (called once per POST by the twin)."""
        with self._lock:
            self._drawn += 1
            if self.poison is not None and body is not None and self.poison in body:
                fault: Optional[str] = self.poison_fault
            elif self._script is not None:
                if self._position >= len(self._script):
                    return None
                fault = self._script[self._position]
                self._position += 1
            elif self.rate > 0 and self._rng.random() < self.rate:
                fault = self._rng.choice(self._kinds)
            else:
                fault = None
            if fault is not None:
                self._applied.append(fault)
            return fault

    @property
    def applied(self) -> List[str]:
        """The faults that fired so far, in order (a copy)."""
        with self._lock:
            return list(self._applied)

    def counts(self) -> Dict[str, int]:
        """How many times each fault fired."""
        with self._lock:
            return dict(Counter(self._applied))

    @property
    def requests_seen(self) -> int:
        """How many POSTs asked the plan for a fault."""
        with self._lock:
            return self._drawn

    @property
    def exhausted(self) -> bool:
        """A script has run out (always False for a random plan)."""
        with self._lock:
            return self._script is not None and self._position >= len(self._script)

    def __repr__(self) -> str:
        if self.poison is not None:
            return "FaultPlan.poison(%r, %r)" % (self.poison, self.poison_fault)
        if self._script is not None:
            return "FaultPlan.script(%r)" % (self._script,)
        return "FaultPlan.random(rate=%r, kinds=%r)" % (self.rate, tuple(self._kinds))


def nth_fault(n: int, lose_every: int, alter_every: int) -> Optional[str]:
    """For the twin's storage test aids (IoTFlow's DataFaults, TLINK's TlinkFaults): what happens to the
    ``n``th accepted item: "lose" (answered as stored, not stored), "alter" (stored changed) or None."""
    if lose_every and n % lose_every == 0:
        return "lose"
    if alter_every and n % alter_every == 0:
        return "alter"
    return None
