"""Run the reproduction of sparse-prunequant from a checkout (it ships in the wheel).

The reproduction is the module `sparse_prunequant.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce prunequant [--quick]`
or `python -m sparse_prunequant.reproduce`. From a checkout::

    python packages/prunequant/benchmarks/reproduce.py           # full: writes results.json here
    python packages/prunequant/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_prunequant.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
