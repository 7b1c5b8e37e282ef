"""Run the reproduction of sparse-nirvana from a checkout (it ships in the wheel).

The reproduction is the module `sparse_nirvana.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce nirvana [--quick]`
or `python -m sparse_nirvana.reproduce`. From a checkout::

    python packages/nirvana/benchmarks/reproduce.py           # full: writes results.json here
    python packages/nirvana/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_nirvana.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
