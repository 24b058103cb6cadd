"""Summarise `make mutate`: killed, survived and unreached mutants per file, and the score.

Reads mutmut's result files (mutants/**/*.py.meta) and the mutants
docs/mutation.md explains as equivalent (table rows "| `name` | equivalent |").
The score of an area is killed / (all - equivalent - not yet checked);
`--require components=90` exits 1 when an area's score is below it.

    python tests/mutation_report.py [--require components=90] [--survivors]
    python tests/mutation_report.py --sample 600 [--seed 14]   # names for `mutmut run`
    python tests/mutation_report.py --forget                   # before a sampled run
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# mutmut 3.8's exit codes (mutmut/stats.py): a timeout (SIGXCPU) is a detection too.
# Not 255, which mutmut also calls "timeout": its fork server exits -1 when the test
# run raised (pytest refused the command, e.g. a test id it no longer finds), so
# no test ran; it is reported as suspicious.
KILLED = {1, 3, -24, 24, 152, 36}
SURVIVED = {0}
NO_TESTS = {5, 33}
EQUIVALENT_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*equivalent\b", re.M)


def results(mutants: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def forget(mutants: Path, area_name: str) -> None:
    """A sampled run starts from nothing checked, so the report is the sample's."""
    for meta in sorted(mutants.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        data["exit_code_by_key"] = {k: (None if area(k) == area_name else v) for k, v in codes.items()}
        meta.write_text(json.dumps(data))


def equivalents(doc: Path) -> set[str]:
    return set(EQUIVALENT_ROW.findall(doc.read_text())) if doc.exists() else set()


def status(code: int | None, name: str, equivalent: set[str]) -> str:
    if name in equivalent:
        return "equivalent"
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "suspicious"


def area(name: str) -> str:
    return name.split(".", 1)[0]


def module(name: str) -> str:
    """components.k8s.x_labels__mutmut_2 -> components.k8s (methods: .xǁClassǁname)."""
    return re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mutation_report")
    p.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "mutation.md")
    p.add_argument("--require", action="append", default=[], help="AREA=PERCENT, e.g. components=90")
    p.add_argument("--survivors", action="store_true", help="list survived and unreached mutants")
    p.add_argument("--sample", type=int, help="print N mutant names of --area drawn at random (--seed)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--area", default="components")
    p.add_argument("--forget", action="store_true", help="set every verdict of --area to not checked")
    args = p.parse_args(argv)
    res = results(args.mutants)
    if not res:
        print(f"no mutmut results under {args.mutants}; run `make mutate` first", file=sys.stderr)
        return 2
    if args.forget:
        forget(args.mutants, args.area)
        return 0
    if args.sample is not None:
        names = sorted(n for n in res if area(n) == args.area)
        print("\n".join(random.Random(args.seed).sample(names, min(args.sample, len(names)))))
        return 0
    eq = equivalents(args.doc)
    per_module: dict[str, Counter[str]] = {}
    per_area: dict[str, Counter[str]] = {}
    for name, code in res.items():
        st = status(code, name, eq)
        per_module.setdefault(module(name), Counter())[st] += 1
        per_area.setdefault(area(name), Counter())[st] += 1
    cols = ["killed", "survived", "no tests", "equivalent", "not checked", "suspicious"]
    print(f"{'module':34} " + " ".join(f"{c:>11}" for c in cols) + "      score")
    for mod, c in sorted(per_module.items()):
        print(f"{mod:34} " + " ".join(f"{c[k]:>11}" for k in cols) + f"  {score(c):>8}")
    failed = False
    for a, c in sorted(per_area.items()):
        print(f"{a + '/ (all)':34} " + " ".join(f"{c[k]:>11}" for k in cols) + f"  {score(c):>8}")
    for req in args.require:
        a, _, pct = req.partition("=")
        c = per_area.get(a, Counter())
        got = ratio(c)
        if got is None or got * 100 < float(pct):
            print(f"{a}: {score(c)} of non-equivalent mutants killed; {pct}% required", file=sys.stderr)
            failed = True
    if args.survivors:
        for name, code in sorted(res.items()):
            st = status(code, name, eq)
            if st in ("survived", "no tests", "suspicious"):
                print(f"{st:10} {name}")
    return 1 if failed else 0


def ratio(c: Counter[str]) -> float | None:
    checked = sum(c.values()) - c["equivalent"] - c["not checked"]
    return c["killed"] / checked if checked else None


def score(c: Counter[str]) -> str:
    r = ratio(c)
    return "-" if r is None else f"{r * 100:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
