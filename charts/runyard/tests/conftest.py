import pathlib
import sys

# `import render` from the tests.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
