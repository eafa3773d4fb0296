import sys
from pathlib import Path

# Lets the tests import the shared Gaussian ground truth (tests/diffusion/gaussian.py) as a plain module.
sys.path.insert(0, str(Path(__file__).parent))
