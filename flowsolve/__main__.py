"""`python -m flowsolve` is the `flowsolve` command; with no arguments it runs `flowsolve demo`, the main job."""

import sys


def main() -> None:
    from ._cli import main as cli

    cli(sys.argv[1:] or ["demo"])


if __name__ == "__main__":
    main()
