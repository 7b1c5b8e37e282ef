"""Run the reproduction of sparse-rethinking from a checkout (it ships in the wheel).

The reproduction is the module `sparse_rethinking.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce rethinking [--quick]`
or `python -m sparse_rethinking.reproduce`. From a checkout::

    python packages/rethinking/benchmarks/reproduce.py           # full: writes results.json here
    python packages/rethinking/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_rethinking.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
