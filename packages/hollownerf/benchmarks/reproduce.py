"""Run the reproduction of sparse-hollownerf from a checkout (it ships in the wheel).

The reproduction is the module `sparse_hollownerf.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce hollownerf [--quick]`
or `python -m sparse_hollownerf.reproduce`. From a checkout::

    python packages/hollownerf/benchmarks/reproduce.py           # full: writes results.json here
    python packages/hollownerf/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_hollownerf.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
