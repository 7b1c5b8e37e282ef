"""Run the reproduction of sparse-lightpeft from a checkout (it ships in the wheel).

The reproduction is the module `sparse_lightpeft.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce lightpeft [--quick]`
or `python -m sparse_lightpeft.reproduce`. From a checkout::

    python packages/lightpeft/benchmarks/reproduce.py           # full: writes results.json here
    python packages/lightpeft/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_lightpeft.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
