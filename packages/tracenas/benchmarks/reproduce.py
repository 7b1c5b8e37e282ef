"""Run the reproduction of sparse-tracenas from a checkout (it ships in the wheel).

The reproduction is the module `sparse_tracenas.reproduce` (see its docstring for the setting,
the claims and the options); from an installed package run `sparse reproduce tracenas
[--quick]` or `python -m sparse_tracenas.reproduce`. From a checkout::

    python packages/tracenas/benchmarks/reproduce.py           # full: writes results.json here
    python packages/tracenas/benchmarks/reproduce.py --quick   # micro model, temporary output
"""

from sparse_tracenas.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
