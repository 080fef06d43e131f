"""`python -m ivr` is the `ivr` command."""

from ivr.cli.main import main

if __name__ == "__main__":
    main()
