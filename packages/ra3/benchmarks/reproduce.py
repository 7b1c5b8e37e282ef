"""Run the reproduction of sparse-ra3 from a checkout (it ships in the wheel).

The reproduction is the module `sparse_ra3.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce ra3 [--quick]`
or `python -m sparse_ra3.reproduce`. From a checkout::

    python packages/ra3/benchmarks/reproduce.py           # full: writes results.json here
    python packages/ra3/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_ra3.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
