"""``python -m switchboard.devtools.fake_anthropic``."""

import sys

from switchboard.devtools.fake_anthropic.cli import main

sys.exit(main())
