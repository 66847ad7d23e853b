"""`python -m cryoclass.cli` runs the command line."""

from cryoclass.cli import main

if __name__ == "__main__":
    main()
