"""A smoke run's verdict, as CI reads it: one JSON object and a JUnit XML file.

Usage::

    verdict = Verdict("iotflow", run_id="3f2a...", started=time.time())
    verdict.steps.append(Step("health", PASSED, 0.012, "200 healthy"))
    write_junit(verdict, Path("smoke.xml"))      # testsuites/testsuite/testcase, as Jenkins, GitLab, GitHub read it
    reporter.json_line(verdict_json(verdict))    # {"schema": 1, "event": "smoke_verdict", ...}

Pure data and formatting, no network: a run that fails before its first request (a usage error, a
missing bundle) still has a verdict to write, so a pipeline always gets a report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .records import Record

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class Step(Record):
    name: str  # health, authenticate, send, read_back, readings (ThermaCore), preflight
    status: str  # passed | failed | skipped
    seconds: float
    message: str = ""
    exit_code: Optional[int] = None  # a failed step's exit code from the one table


class Reading(Record):
    """One marked reading: what was sent, and what the read-back found."""

    seq: int
    marker: str  # "<run id>/<seq>"
    status: str  # passed | failed | skipped
    id: Optional[str] = None  # the platform's id for it (telemetry_id), when it gives one
    timestamp: Optional[str] = None  # the payload's timestamp as sent
    message: str = ""
    differences: Optional[Dict[str, Dict[str, Any]]] = None  # field -> {"sent": ..., "got": ...}
    seconds: float = 0.0


class Verdict:
    def __init__(self, platform: str, run_id: str, started: float) -> None:
        self.platform = platform
        self.run_id = run_id
        self.started = started  # epoch seconds
        self.steps: List[Step] = []
        self.readings: List[Reading] = []
        self.exit_code = 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not any(s.status == FAILED for s in self.steps)


def verdict_json(v: Verdict, at: Optional[str] = None) -> Dict[str, Any]:
    """The --json verdict (README "iotpost smoke"); Reporter.json_line adds "schema" and "at"."""
    doc: Dict[str, Any] = {
        "event": "smoke_verdict",
        "platform": v.platform,
        "run_id": v.run_id,
        "passed": v.passed,
        "exit_code": v.exit_code,
        "steps": [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 3), "message": s.message,
                   "exit_code": s.exit_code} for s in v.steps],
        "readings": [{"seq": r.seq, "marker": r.marker, "status": r.status, "id": r.id, "timestamp": r.timestamp,
                      "message": r.message, "differences": r.differences} for r in v.readings],
    }
    if at is not None:
        doc["at"] = at
    return doc


def junit_tree(v: Verdict, redact: Callable[[str], str] = lambda text: text):
    """testsuites > testsuite > testcase (one per step, one per reading), <failure>/<skipped/> inside.

    ``redact`` (the run's Redactor) is applied to every message: CI keeps these files as artifacts,
    and a server may echo a key back in an error.
    """
    import datetime as _dt
    from xml.etree import ElementTree as ET

    cases = [("step", s.name, s.status, s.seconds, s.message) for s in v.steps]
    cases += [("reading", "read_back reading %d (%s)" % (r.seq, r.marker), r.status, r.seconds,
               _reading_message(r)) for r in v.readings]
    failures = sum(1 for c in cases if c[2] == FAILED)
    skipped = sum(1 for c in cases if c[2] == SKIPPED)
    total = sum(c[3] for c in cases if c[0] == "step")
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
              "time": "%.3f" % total}
    root = ET.Element("testsuites", dict(counts, name="iotpost smoke"))
    stamp = _dt.datetime.fromtimestamp(int(v.started), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    suite = ET.SubElement(root, "testsuite", dict(counts, name="iotpost smoke %s" % v.platform, timestamp=stamp,
                                                  hostname="localhost", id="0"))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="platform", value=v.platform)
    ET.SubElement(props, "property", name="run_id", value=v.run_id)
    ET.SubElement(props, "property", name="exit_code", value=str(v.exit_code))
    for kind, name, status, seconds, message in cases:
        message = redact(message)
        case = ET.SubElement(suite, "testcase", name=name, classname="iotpost.smoke.%s" % v.platform,
                             time="%.3f" % seconds)
        if status == FAILED:
            failure = ET.SubElement(case, "failure", message=_one_line(message), type="SmokeFailure")
            failure.text = xml_safe(message)
        elif status == SKIPPED:
            ET.SubElement(case, "skipped", message=_one_line(message))
    return ET.ElementTree(root)


def _reading_message(r: Reading) -> str:
    if not r.differences:
        return r.message
    diffs = "; ".join("%s: sent %r, got %r" % (k, d.get("sent"), d.get("got")) for k, d in sorted(r.differences.items()))
    return ("%s: %s" % (r.message, diffs)) if r.message else diffs


def xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot hold (control codes a server's message may carry) as \\xNN: the file must parse."""
    return "".join(ch if ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd")
                   or ch >= "\U00010000" else "\\x%02x" % ord(ch) for ch in text)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(xml_safe(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def write_junit(v: Verdict, path: Path, redact: Callable[[str], str] = lambda text: text) -> None:
    """Write the JUnit file whole or not at all (a temporary file renamed over it)."""
    path = Path(path)
    if not path.name or path.is_dir():
        raise OSError(21, "not a file name")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    try:
        junit_tree(v, redact).write(str(tmp), encoding="utf-8", xml_declaration=True)
        os.replace(str(tmp), str(path))
    finally:
        if tmp.exists():
            tmp.unlink()
