"""Run the reproduction of sparse-granet from a checkout (it ships in the wheel).

The reproduction is the module `sparse_granet.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce granet [--quick]`
or `python -m sparse_granet.reproduce`. From a checkout::

    python packages/granet/benchmarks/reproduce.py           # full: writes results.json here
    python packages/granet/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_granet.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
