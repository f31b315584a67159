"""iotpost: send IoT telemetry over verified HTTPS, with the standard library only.

The entry scripts (post_https_sample.py, tlink_push.py, receiver.py) are thin wrappers around
modules in this package; see ARCHITECTURE.md for how data flows through them.
"""

__version__ = "0.1.0"
# No reading can be older than the release that stamps it: a clock before this date is not set.
RELEASE_DATE = "2026-11-27"
