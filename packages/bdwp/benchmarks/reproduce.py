"""Run the reproduction of sparse-bdwp from a checkout (it ships in the wheel).

The reproduction is the module `sparse_bdwp.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce bdwp [--quick]`
or `python -m sparse_bdwp.reproduce`. From a checkout::

    python packages/bdwp/benchmarks/reproduce.py           # full: writes results.json here
    python packages/bdwp/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_bdwp.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
