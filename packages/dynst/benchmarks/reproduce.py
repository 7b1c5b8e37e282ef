"""Run the reproduction of sparse-dynst from a checkout (it ships in the wheel).

The reproduction is the module `sparse_dynst.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce dynst [--quick]`
or `python -m sparse_dynst.reproduce`. From a checkout::

    python packages/dynst/benchmarks/reproduce.py           # full: writes results.json here
    python packages/dynst/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_dynst.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
