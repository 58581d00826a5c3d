"""`python -m lm.reward`: see `lm.reward.command`."""

import sys

from lm.reward.command import main

sys.exit(main())
