"""``python -m kdumper``."""

from kdumper.cli.main import main

raise SystemExit(main())
