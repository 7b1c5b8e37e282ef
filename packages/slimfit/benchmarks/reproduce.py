"""Run the reproduction of sparse-slimfit from a checkout (it ships in the wheel).

The reproduction is the module `sparse_slimfit.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce slimfit [--quick]`
or `python -m sparse_slimfit.reproduce`. From a checkout::

    python packages/slimfit/benchmarks/reproduce.py           # full: writes results.json here
    python packages/slimfit/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_slimfit.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
