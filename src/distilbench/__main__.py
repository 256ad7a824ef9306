"""`python -m distilbench ...`: the same command as the `distilbench` console script."""

from distilbench.cli import main

main()
