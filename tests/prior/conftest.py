import sys
from pathlib import Path

# Lets the prior tests import their shared data (tests/prior/prior_data.py) as a plain module.
sys.path.insert(0, str(Path(__file__).parent))
