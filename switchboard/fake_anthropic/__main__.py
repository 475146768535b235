"""``python -m switchboard.fake_anthropic``."""

import sys

from switchboard.fake_anthropic.cli import main

sys.exit(main())
