"""Run the reproduction of sparse-vocabtrim from a checkout (it ships in the wheel).

The reproduction is the module `sparse_vocabtrim.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce vocabtrim [--quick]`
or `python -m sparse_vocabtrim.reproduce`. From a checkout::

    python packages/vocabtrim/benchmarks/reproduce.py           # full: writes results.json here
    python packages/vocabtrim/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_vocabtrim.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
