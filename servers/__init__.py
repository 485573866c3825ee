"""The servers of the suite, one sub-package each."""
