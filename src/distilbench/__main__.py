"""`python -m distilbench ...`: the same command as the `distilbench` console script."""

from .cli import main

main()
