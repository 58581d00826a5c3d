"""`python -m lm.agent`: see lm.agent.cli."""

import sys

from lm.agent.cli import main

sys.exit(main())
