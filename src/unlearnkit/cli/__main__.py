"""`python -m unlearnkit.cli ...`: the same app as the `unlearn` console script."""

from unlearnkit.cli import main

main()
