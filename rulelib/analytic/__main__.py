"""``python -m rulelib.analytic ...``: the analytic command without the main command line."""

import argparse
import sys

from rulelib.analytic import command

parser = argparse.ArgumentParser(prog="python -m rulelib.analytic", description=command.__doc__)
command.add_arguments(parser)
sys.exit(command.run(parser.parse_args()))
