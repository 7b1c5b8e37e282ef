"""Run the reproduction of sparse-rebalance from a checkout (it ships in the wheel).

The reproduction is the module `sparse_rebalance.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce rebalance [--quick]`
or `python -m sparse_rebalance.reproduce`. From a checkout::

    python packages/rebalance/benchmarks/reproduce.py           # full: writes results.json here
    python packages/rebalance/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_rebalance.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
