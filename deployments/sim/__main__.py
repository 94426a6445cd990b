import sys

from .cluster import main

raise SystemExit(main(sys.argv[1:]))
