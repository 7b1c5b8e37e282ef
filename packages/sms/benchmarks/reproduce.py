"""Run the reproduction of sparse-sms from a checkout (it ships in the wheel).

The reproduction is the module `sparse_sms.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce sms [--quick]`
or `python -m sparse_sms.reproduce`. From a checkout::

    python packages/sms/benchmarks/reproduce.py           # full: writes results.json here
    python packages/sms/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_sms.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
