"""Write the demo fine-tuning data: short chat records of simple facts, a held-out split and a golden set.

    python data/finetune/make_demo_data.py      # rewrites facts-train.jsonl, facts-eval.jsonl, golden.jsonl

The facts (capitals, the days and months in order, opposites, colours, counting) have one-word answers,
so a small model with a small vocabulary can learn them in a few hundred CPU steps. Each fact is asked
in three phrasings. The held-out file holds one phrasing of every fourth fact (its other phrasings are
trained on), so the eval loss measures whether a fact learned one way is known when asked another way.
The golden set asks facts in their first phrasing; a randomly initialized base model answers none.
The output is a function of this file only (fixed seed, sorted iteration): rerunning it changes no byte.
Written by the llmbuild authors for the demo; released under CC0-1.0.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Russia": "Moscow",
    "Greece": "Athens", "Austria": "Vienna", "Ireland": "Dublin", "Poland": "Warsaw", "Portugal": "Lisbon",
    "Cuba": "Havana", "Chile": "Santiago", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "China": "Beijing", "Canada": "Ottawa", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Hungary": "Budapest", "Belgium": "Brussels", "Ghana": "Accra",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "left": "right", "fast": "slow", "open": "closed",
    "day": "night", "wet": "dry", "light": "dark", "full": "empty", "early": "late", "high": "low",
    "hard": "soft", "in": "out", "on": "off", "yes": "no", "win": "lose", "push": "pull", "buy": "sell",
    "first": "last", "north": "south", "east": "west", "black": "white", "old": "new",
}
COLOURS = {
    "the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "a banana": "yellow",
    "an orange": "orange", "milk": "white", "a tomato": "red", "chocolate": "brown", "a carrot": "orange",
    "a lemon": "yellow",
}

PHRASINGS = {
    "capital": ["What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?"],
    "day_after": ["What day comes after {}?", "Which day follows {}?", "Name the day after {}."],
    "day_before": ["What day comes before {}?", "Which day precedes {}?", "Name the day before {}."],
    "month_after": ["What month comes after {}?", "Which month follows {}?", "Name the month after {}."],
    "opposite": ["What is the opposite of {}?", "Give the opposite of {}.", "Which word means the opposite of {}?"],
    "colour": ["What colour is {}?", "Name the colour of {}.", "Which colour is {}?"],
    "next_number": ["What number comes after {}?", "Which number follows {}?", "Count on from {}: what is next?"],
}


def facts() -> list[tuple[str, str, str]]:
    """(kind, subject, answer) for every fact, in a fixed order."""
    out = [("capital", c, a) for c, a in CAPITALS.items()]
    out += [("day_after", d, DAYS[(i + 1) % 7]) for i, d in enumerate(DAYS)]
    out += [("day_before", d, DAYS[i - 1]) for i, d in enumerate(DAYS)]
    out += [("month_after", m, MONTHS[(i + 1) % 12]) for i, m in enumerate(MONTHS)]
    out += [("opposite", w, a) for w, a in OPPOSITES.items()]
    out += [("colour", x, c) for x, c in COLOURS.items()]
    out += [("next_number", str(n), str(n + 1)) for n in range(20)]
    return out


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def main() -> None:
    train, held, golden = [], [], []
    for i, (kind, subject, answer) in enumerate(facts()):
        for j, p in enumerate(PHRASINGS[kind]):
            q = p.format(subject)
            # every fourth fact: its last phrasing is held out, the others are trained on
            (held if i % 4 == 0 and j == 2 else train).append(chat(q, answer))
        if i % 3 == 0:
            golden.append({"prompt": PHRASINGS[kind][0].format(subject), "answer": answer})
    random.Random(0).shuffle(train)  # mixed kinds in every batch; the trainer shuffles again by its seed
    for name, rows in (("facts-train.jsonl", train), ("facts-eval.jsonl", held), ("golden.jsonl", golden)):
        with open(HERE / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{name}: {len(rows)} records")


if __name__ == "__main__":
    main()
