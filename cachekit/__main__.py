"""``python -m cachekit``: the command line (see :mod:`cachekit.cli`)."""

from cachekit.cli import main

raise SystemExit(main())
