"""The load the locustfile sends and the bench's in-process limit replays: held-out texts, weighted requests.

Texts are the English side of the corpus's *test* split (training/data.py: never seen in training), so
the tokenizer meets unknown words and real length variety, not one constant string.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "loadtests" / "results" / "heldout-test-english.json"


def held_out_texts(cache: Path = CACHE) -> list[str]:
    """Distinct English sentences of the test split (3,684 with the default split); cached after the first call (~9 s)."""
    if cache.exists():
        return json.loads(cache.read_text())
    from gru_encoder.core.tokenizer import Tokenizer, TokenizerConfig
    from training import data
    from training.train import TrainConfig

    cfg = TrainConfig()  # the split and length filter of the default run
    source = Tokenizer.build([], TokenizerConfig(fold_accents=True))
    target = Tokenizer.build([], TokenizerConfig(fold_accents=False))
    corpus = data.build_corpus(
        data.read_pairs(), source, target, max_words=cfg.max_words,
        valid_permille=cfg.valid_permille, test_permille=cfg.test_permille,
    )
    texts = [english for english, _ in data.group_references(corpus.test, source)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(texts, ensure_ascii=False))
    return texts


@dataclass(frozen=True)
class Kind:
    """One kind of caller: its locust task weight and how it builds a request body."""

    name: str
    weight: int


# What callers look like: mostly one sentence; some hidden-only lookups; batch jobs; rarely a long text.
KINDS = (Kind("one text", 10), Kind("hidden only", 5), Kind("8-32 texts", 2), Kind("long text", 1))


def make_body(kind: str, texts: list[str], rng: random.Random) -> dict[str, Any]:
    """A request body of one kind, texts drawn from `texts` with `rng`."""
    if kind == "one text":
        return {"texts": [rng.choice(texts)]}
    if kind == "hidden only":
        return {"texts": rng.sample(texts, rng.randint(1, 8)), "return": ["hidden"]}
    if kind == "8-32 texts":
        return {"texts": rng.sample(texts, rng.randint(8, 32))}
    if kind == "long text":  # 8-12 held-out sentences in one text: ~60-110 tokens, under max_length 128
        return {"texts": [" ".join(rng.sample(texts, rng.randint(8, 12)))], "return": ["hidden"]}
    raise ValueError(f"unknown request kind {kind!r}; one of {[k.name for k in KINDS]}")


def request_mix(texts: list[str], n: int, seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """n (kind, body) pairs drawn with the task weights: the same mix locust sends, for the in-process limit."""
    rng = random.Random(seed)
    names, weights = [k.name for k in KINDS], [k.weight for k in KINDS]
    return [(kind, make_body(kind, texts, rng)) for kind in rng.choices(names, weights, k=n)]
