"""Generate the embedded demo dataset: "Spell 372:" -> "three seven two" (seeded, committed).

Writes JSONL with prompt/completion fields, plus a few deliberately messy records (extra
whitespace, an empty completion, an exact duplicate) so that cleaning has something to count.

    python -m scripts.make_demo_data --out data/demo/spell_digits.jsonl --records 2400 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys

WORDS = "zero one two three four five six seven eight nine".split()


def spell(number: int) -> str:
    return " ".join(WORDS[int(d)] for d in str(number))


def make_records(count: int, seed: int) -> list[dict]:
    """`count` distinct numbers below 10,000 (every length 1..4 digits), then the messy extras."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10_000), count)
    records = [{"prompt": f"Spell {n}:", "completion": spell(n)} for n in numbers]
    records += [
        {"prompt": "Spell   45:  ", "completion": " four  five "},  # whitespace to normalise
        {"prompt": "Spell 7:", "completion": ""},  # empty completion: dropped
        dict(records[0]),  # exact duplicate: dropped
    ]
    return records


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--records", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as out:
        for record in make_records(args.records, args.seed):
            out.write(json.dumps(record) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
