"""Run the reproduction of sparse-atp from a checkout (it ships in the wheel).

The reproduction is the module `sparse_atp.reproduce` (see its docstring for the setting, the
claim and the options); from an installed package run `sparse reproduce atp [--quick]` or
`python -m sparse_atp.reproduce`. From a checkout::

    python packages/atp/benchmarks/reproduce.py           # full: writes results.json here
    python packages/atp/benchmarks/reproduce.py --quick   # micro settings, temporary output
"""

from sparse_atp.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
