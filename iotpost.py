#!/usr/bin/env python3
"""iotpost COMMAND: the suite's one entry point in a clone, as `python3 -m iotpost` (see --help).

Python imports the iotpost/ package beside this file (a package wins over a module of the same name).
"""

import sys

from iotpost.cli_main import main

if __name__ == "__main__":
    sys.exit(main())
