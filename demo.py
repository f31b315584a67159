#!/usr/bin/env python3
"""Start the local twin, send it telemetry over verified TLS with the sample bundle, show what it stored."""

import sys

from iotpost.demo import main

if __name__ == "__main__":
    sys.exit(main())
