"""Run the localmcp command line: ``python -m localmcp``."""

from .cli import main

main()
