"""``python -m dreamreward`` runs the LightningCLI."""

from dreamreward.cli import main

if __name__ == "__main__":
    main()
