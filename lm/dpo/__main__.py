"""`python -m lm.dpo`: see `lm.dpo.command`."""

import sys

from lm.dpo.command import main

sys.exit(main())
