"""`python -m agentcloud.cli`: the same as the `agentcloud` command."""

import sys

from agentcloud.cli import main

sys.exit(main())
