"""Run the reproduction of sparse-lapp from a checkout (it ships in the wheel).

The reproduction is the module `sparse_lapp.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce lapp [--quick]`
or `python -m sparse_lapp.reproduce`. From a checkout::

    python packages/lapp/benchmarks/reproduce.py           # full: writes results.json here
    python packages/lapp/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_lapp.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
