"""``python -m arrayrl.recipes dqn-cartpole [--total-steps N] [--seed S] [--backend B] [--out DIR] [--set K=V]``."""

import sys

from .cli import main

sys.exit(main())
