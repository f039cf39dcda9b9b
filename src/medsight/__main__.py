"""``python -m medsight`` runs the command line."""

from medsight.cli import main

main()
