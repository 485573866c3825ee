"""Run the localmcp command line: ``python -m localmcp``."""

from .entry import main

main()
