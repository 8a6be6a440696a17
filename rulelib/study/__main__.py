"""``python -m rulelib.study ...``: the study command without the main command line."""

import argparse
import sys

from rulelib.study import command

parser = argparse.ArgumentParser(prog="python -m rulelib.study", description=command.__doc__)
command.add_arguments(parser)
sys.exit(command.run(parser.parse_args()))
