"""Run the reproduction of sparse-lth from a checkout (it ships in the wheel).

The reproduction is the module `sparse_lth.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce lth [--quick]`
or `python -m sparse_lth.reproduce`. From a checkout::

    python packages/lth/benchmarks/reproduce.py           # full: writes results.json here
    python packages/lth/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_lth.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
