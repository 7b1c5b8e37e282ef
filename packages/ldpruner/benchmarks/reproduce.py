"""Run the reproduction of sparse-ldpruner from a checkout (it ships in the wheel).

The reproduction is the module `sparse_ldpruner.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce ldpruner [--quick]`
or `python -m sparse_ldpruner.reproduce`. From a checkout::

    python packages/ldpruner/benchmarks/reproduce.py           # full: writes results.json here
    python packages/ldpruner/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_ldpruner.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
