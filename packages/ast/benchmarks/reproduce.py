"""Run the reproduction of sparse-ast from a checkout (it ships in the wheel).

The reproduction is the module `sparse_ast.reproduce` (see its docstring for the setting,
the claim and the options); from an installed package run `sparse reproduce ast [--quick]`
or `python -m sparse_ast.reproduce`. From a checkout::

    python packages/ast/benchmarks/reproduce.py           # full: writes results.json here
    python packages/ast/benchmarks/reproduce.py --quick   # tiny settings, temporary output
"""

from sparse_ast.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
