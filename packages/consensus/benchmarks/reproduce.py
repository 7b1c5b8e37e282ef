"""Run the reproduction of sparse-consensus from a checkout (it ships in the wheel).

The reproduction is the module `sparse_consensus.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce consensus [--quick]`
or `python -m sparse_consensus.reproduce`. From a checkout::

    python packages/consensus/benchmarks/reproduce.py           # full: writes results.json here
    python packages/consensus/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_consensus.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
