"""Run the reproduction of sparse-shrp from a checkout (it ships in the wheel).

The reproduction is the module `sparse_shrp.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce shrp [--quick]`
or `python -m sparse_shrp.reproduce`. From a checkout::

    python packages/shrp/benchmarks/reproduce.py           # full: writes results.json here
    python packages/shrp/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_shrp.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
