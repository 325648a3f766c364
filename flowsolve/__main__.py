"""`python -m flowsolve`: the main demo (the effective theory on the paper's two-point setting)."""

from ._demo import main

if __name__ == "__main__":
    main()
