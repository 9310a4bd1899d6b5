"""`python -m healer`: the same as the `healer` console script."""

from healer.cli import main

main()
