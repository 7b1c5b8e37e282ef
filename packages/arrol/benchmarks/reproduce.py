"""Run the reproduction of sparse-arrol from a checkout (it ships in the wheel).

The reproduction is the module `sparse_arrol.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce arrol [--quick]`
or `python -m sparse_arrol.reproduce`. From a checkout::

    python packages/arrol/benchmarks/reproduce.py           # full: writes results.json here
    python packages/arrol/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_arrol.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
