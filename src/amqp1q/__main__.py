"""``python -m amqp1q``: the same as the ``amqp1q`` command."""

import sys

from .cli import main

sys.exit(main())
