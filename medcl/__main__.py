"""``python -m medcl``."""

from medcl.cli import main

raise SystemExit(main())
