"""``python3 -m iotpost COMMAND``: see iotpost.cli_main."""

import sys

from .cli_main import main

if __name__ == "__main__":
    sys.exit(main())
