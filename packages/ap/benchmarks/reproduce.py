"""Run the reproduction of sparse-ap from a checkout (it ships in the wheel).

The reproduction is the module `sparse_ap.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce ap [--quick]`
or `python -m sparse_ap.reproduce`. From a checkout::

    python packages/ap/benchmarks/reproduce.py           # full: writes results.json here
    python packages/ap/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_ap.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
