"""Generate the embedded demo datasets: "Spell 372:" -> "three seven two" (seeded, committed).

Writes JSONL with prompt/completion fields, plus a few deliberately messy records (extra
whitespace, an empty completion, an exact duplicate) so that cleaning has something to count.
With --pairs, writes preference pairs on the same prompts instead: chosen spells the digits
comma-separated ("three, seven, two"), rejected in the plain style of the first dataset, so that
DPO after SFT on the first visibly switches style (one-digit numbers, the same in both styles,
and the messy records are left out).

    python -m scripts.make_demo_data --out data/demo/spell_digits.jsonl --records 2400 --seed 0
    python -m scripts.make_demo_data --pairs --out data/demo/spell_digits_pairs.jsonl --records 2400 --seed 0

With --benchmark spell or choice, writes the data of the repo's two lm-evaluation-harness tasks
(tasks/): numbers the demo never trains on (not among make_records(2400, 0)), spelled as
{prompt, answer}, or as a four-way choice between the right spelling and three that differ in
one digit ({prompt, choices, label}).

    python -m scripts.make_demo_data --benchmark spell --out tasks/data/spell_digits.jsonl --records 200 --seed 1
    python -m scripts.make_demo_data --benchmark choice --out tasks/data/digit_choice.jsonl --records 200 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys

WORDS = "zero one two three four five six seven eight nine".split()


def spell(number: int) -> str:
    return " ".join(WORDS[int(d)] for d in str(number))


# The preferred style of the pairs: the words joined by ", " (every word stays one token of the
# demo tokenizer). evaluate.regex_match with this pattern measures the share written that way.
PREFERRED_SEPARATOR = ", "
PREFERRED_PATTERN = r"^[a-z]+(, [a-z]+)+$"


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


def make_pairs(count: int, seed: int) -> list[dict]:
    """Preference pairs on the prompts of make_records(count, seed) that have two or more digits:
    chosen in the preferred style, rejected in the plain one (the SFT demo's completion)."""
    pairs = []
    for record in make_records(count, seed)[:count]:
        words = record["completion"].split()
        if len(words) > 1:
            chosen = PREFERRED_SEPARATOR.join(words)
            pairs.append({"prompt": record["prompt"], "chosen": chosen, "rejected": record["completion"]})
    return pairs


def held_out(count: int, seed: int) -> list[str]:
    """`count` numbers (as digit strings) that the demo's data does not hold."""
    trained = {int(r["prompt"].split()[1].rstrip(":")) for r in make_records(2400, 0)}
    return [str(n) for n in random.Random(seed).sample(sorted(set(range(10_000)) - trained), count)]


def make_benchmark(kind: str, count: int, seed: int) -> list[dict]:
    """The records of the spelling task (generation) or of the digit-choice task (log-likelihood)."""
    if kind == "spell":
        return [{"prompt": f"Spell {n}:", "answer": spell(int(n))} for n in held_out(count, seed)]
    rng, records = random.Random(seed + 1), []
    for number in held_out(count, seed):
        wrong: set[str] = set()
        while len(wrong) < 3:
            place, digit = rng.randrange(len(number)), str(rng.randrange(10))
            candidate = number[:place] + digit + number[place + 1 :]
            if candidate != number:
                wrong.add(candidate)
        choices = [" ".join(WORDS[int(d)] for d in c) for c in [number, *sorted(wrong)]]
        rng.shuffle(choices)
        records.append(
            {"prompt": f"Spell {number}:", "choices": choices, "label": choices.index(spell(int(number)))}
        )
    return records


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--records", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs", action="store_true", help="write {prompt, chosen, rejected} style pairs instead"
    )
    parser.add_argument(
        "--benchmark", choices=["spell", "choice"], help="write the data of a harness task in tasks/ instead"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as out:
        if args.benchmark:
            records = make_benchmark(args.benchmark, args.records, args.seed)
        else:
            records = (make_pairs if args.pairs else make_records)(args.records, args.seed)
        for record in records:
            out.write(json.dumps(record) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
