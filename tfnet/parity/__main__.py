"""``python -m tfnet.parity``: the harness without the scratchnet command."""

from .cli import main

raise SystemExit(main())
