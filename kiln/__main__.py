"""Allow ``python -m kiln``."""

from kiln.cli import main

raise SystemExit(main())
