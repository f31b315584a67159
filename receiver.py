#!/usr/bin/env python3
"""Run the local twin receiver: python3 receiver.py [--port 8443] [--bundle DIR] (see --help)."""

import sys

from iotpost.receiver.cli import main

if __name__ == "__main__":
    sys.exit(main())
