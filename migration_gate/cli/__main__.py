"""`python -m migration_gate.cli <command>`: the scripts' way in, the same as the `migration-gate` console script."""

import sys

from migration_gate.cli.main import console

if __name__ == "__main__":
    sys.exit(console())
