"""Run the reproduction of sparse-supertickets from a checkout (it ships in the wheel).

The reproduction is the module `sparse_supertickets.reproduce` (see its docstring for the
setting, the claim and the options); from an installed package run
`sparse reproduce supertickets [--quick]` or `python -m sparse_supertickets.reproduce`. From a
checkout::

    python packages/supertickets/benchmarks/reproduce.py --jobs 3   # full: writes results.json
    python packages/supertickets/benchmarks/reproduce.py --quick    # tiny, temporary output
"""

from sparse_supertickets.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
