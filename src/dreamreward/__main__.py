"""``python -m dreamreward`` runs the command line behind its error boundary."""

from dreamreward.cli import entry

if __name__ == "__main__":
    entry()
