"""Run the reproduction of sparse-pdp from a checkout (it ships in the wheel).

The reproduction is the module `sparse_pdp.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce pdp [--quick]`
or `python -m sparse_pdp.reproduce`. From a checkout::

    python packages/pdp/benchmarks/reproduce.py           # full: writes results.json here
    python packages/pdp/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_pdp.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
