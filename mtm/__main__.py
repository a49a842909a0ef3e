"""`python -m mtm ...` is the `mtm` command (handy under `torchrun -m mtm train ...`)."""

from mtm.cli import main

if __name__ == "__main__":
    main()
