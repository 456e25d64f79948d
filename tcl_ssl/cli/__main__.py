"""``python -m tcl_ssl.cli``: the ``tcl-ssl`` command."""

import sys

from tcl_ssl.cli import main

if __name__ == "__main__":
    sys.exit(main())
