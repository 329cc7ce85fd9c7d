"""`python -m infra.cli`: the same as the `agentcloud` command."""

import sys

from infra.cli import main

sys.exit(main())
