"""`python -m proxy` is the `batchgate` command."""

from proxy.cli import main

raise SystemExit(main())
