"""event-ruler's CityLots2 benchmark (CL2Benchmark) against pipelines' Matcher.

Generates the synthetic CityLots2 data with ../shared/bench's generator if it
is missing (into bench/data/, outside git), loads each category's rules into
one Matcher, and times parsing plus matching of all 213,068 events given as
JSON text, checking every rule's match count against event-ruler's. Prints
events per second per category (median of the measured passes) and the ratio
to event-ruler's own rate measured on a machine like ours, with the load
average before and after. That rate is a reference from ../shared/bench's
README (this script does not run event-ruler), not a peer of the same run:
read the ratio with the load printed.

The data and rules come from ``shared/bench`` beside the checkout (the
checkout's parent directory holds ``shared/``); the run stops saying so if
it is not there.

    python bench/bench_citylots.py [--passes 5] [--warmup 1] [--category EXACT ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipelines.patterns import Matcher

HERE = Path(__file__).resolve().parent
SHARED_BENCH = HERE.parent.parent / "shared" / "bench"
DATA = HERE / "data" / "citylots2-synthetic.json.gz"
SHA256 = "3948943c0183f663183e0e45edc2e26bfbb4b6d1aec754a7f8c1d935ff6be6f4"
#: event-ruler (Java 17, SerialGC) on the same synthetic data, median events/s,
#: from ../shared/bench/README.md.
EVENT_RULER = {
    "EXACT": 419_000,
    "WILDCARD": 318_000,
    "PREFIX": 420_000,
    "PREFIX_EQUALS_IGNORE_CASE": 417_000,
    "SUFFIX": 405_000,
    "SUFFIX_EQUALS_IGNORE_CASE": 405_000,
    "EQUALS_IGNORE_CASE": 341_000,
    "NUMERIC": 202_000,
    "ANYTHING_BUT": 229_000,
    "ANYTHING_BUT_IGNORE_CASE": 237_000,
    "ANYTHING_BUT_PREFIX": 243_000,
    "ANYTHING_BUT_SUFFIX": 233_000,
    "ANYTHING_BUT_WILDCARD": 233_000,
    "COMPLEX_ARRAYS": 47_000,
    "PARTIAL_COMBO": 73_000,
    "COMBO": 26_000,
}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ensure_data() -> list[bytes]:
    if not (SHARED_BENCH / "cl2-rules.json").exists():
        sys.exit(
            f"{SHARED_BENCH / 'cl2-rules.json'} is missing: the CityLots2 rules and their"
            " generator are read from shared/bench beside the checkout"
        )
    if not DATA.exists():
        generator = SHARED_BENCH / "gen_citylots2_synthetic.py"
        if not generator.exists():
            sys.exit(f"{generator} is missing: cannot generate the CityLots2 data")
        DATA.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {DATA} (about 25 s) ...", flush=True)
        subprocess.run([sys.executable, str(generator), str(DATA)], check=True)
    raw = gzip.decompress(DATA.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        sys.exit(f"{DATA} has sha256 {digest}, expected {SHA256}: delete it and rerun")
    return raw.splitlines()


def load_rules() -> dict[str, list[tuple[str, dict[str, object], int]]]:
    spec = json.loads((SHARED_BENCH / "cl2-rules.json").read_text())
    categories: dict[str, list[tuple[str, dict[str, object], int]]] = {}
    for name, rules in spec["categories"].items():
        categories[name] = [
            (f"{name}-{number}", rule["rule"], rule["expected_matches"])
            for number, rule in enumerate(rules)
        ]
    for combo, members in spec["combos"].items():
        categories[combo] = [rule for member in members for rule in categories[member]]
    return categories


def run_pass(matcher: Matcher, lines: list[bytes]) -> tuple[float, dict[str, int]]:
    counts: dict[str, int] = dict.fromkeys(matcher, 0)
    match_json = matcher.match_json
    start = time.perf_counter()
    for line in lines:
        for name in match_json(line):
            counts[name] += 1
    return time.perf_counter() - start, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--category", action="append", help="run only these categories")
    args = parser.parse_args()

    lines = ensure_data()
    categories = load_rules()
    chosen = args.category or list(categories)
    print(
        f"{len(lines):,} events; {args.warmup} warm-up and {args.passes} measured passes;"
        f" load average {load()}"
    )
    print(f"{'category':28} {'events/s':>10} {'event-ruler':>12} {'ratio':>7}  counts")
    failures = 0
    for name in chosen:
        matcher = Matcher()
        for rule_name, rule, _ in categories[name]:
            matcher.add(rule_name, rule)
        for _ in range(args.warmup):
            run_pass(matcher, lines)
        rates = []
        counts: dict[str, int] = {}
        for _ in range(args.passes):
            elapsed, counts = run_pass(matcher, lines)
            rates.append(len(lines) / elapsed)
        wrong = [
            f"{rule_name}={counts[rule_name]} (want {want})"
            for rule_name, _, want in categories[name]
            if counts[rule_name] != want
        ]
        failures += len(wrong)
        rate = statistics.median(rates)
        reference = EVENT_RULER[name]
        verdict = "ok" if not wrong else "WRONG: " + ", ".join(wrong)
        print(f"{name:28} {rate:>10,.0f} {reference:>12,} {rate / reference:>7.2f}  {verdict}")
    print(f"load average after: {load()}")
    if failures:
        sys.exit(f"{failures} rule counts differ from event-ruler's")


if __name__ == "__main__":
    main()
