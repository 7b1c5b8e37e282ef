"""Run the reproduction of sparse-compresso from a checkout (it ships in the wheel).

The reproduction is the module `sparse_compresso.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce compresso [--quick]`
or `python -m sparse_compresso.reproduce`. From a checkout::

    python packages/compresso/benchmarks/reproduce.py           # full: writes results.json here
    python packages/compresso/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_compresso.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
