"""Run the reproduction of sparse-cwd from a checkout (it ships in the wheel).

The reproduction is the module `sparse_cwd.reproduce` (see its docstring for the setting, the
claim and the options); from an installed package run `sparse reproduce cwd [--quick]` or
`python -m sparse_cwd.reproduce`. From a checkout::

    python packages/cwd/benchmarks/reproduce.py --jobs 2   # full: writes results.json here
    python packages/cwd/benchmarks/reproduce.py --quick    # tiny settings, temporary output
"""

from sparse_cwd.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
