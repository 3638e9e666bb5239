"""`python -m mn ...` is the `mn` command (also what torchrun runs: `torchrun ... -m mn train ...`)."""
import sys

from .cli import main

sys.exit(main())
