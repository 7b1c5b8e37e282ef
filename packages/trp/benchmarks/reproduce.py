"""Run the reproduction of sparse-trp from a checkout (it ships in the wheel).

The reproduction is the module `sparse_trp.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce trp [--quick]`
or `python -m sparse_trp.reproduce`. From a checkout::

    python packages/trp/benchmarks/reproduce.py           # full: writes results.json here
    python packages/trp/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_trp.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
