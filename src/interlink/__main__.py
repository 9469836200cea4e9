"""``python -m interlink``: the same command as ``interlink``."""

from interlink.cli import main

if __name__ == "__main__":
    main()
