"""The English-French corpus: read, filter, split by English sentence, and batch for training."""

from __future__ import annotations

import gzip
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from gru_encoder.core.model import pad_batch
from gru_encoder.core.tokenizer import EOS_ID, SOS_ID, Tokenizer

CORPUS = Path(__file__).resolve().parent.parent / "data" / "eng-fra.txt.gz"
# sha256 of the uncompressed corpus (data/eng-fra.SOURCE.md): training refuses any other file.
CORPUS_SHA256 = "6b0f3decdb78600485b58efb541f5a2ab69ba888742ac04180e013084e40de7c"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Pair:
    english: str
    french: str


@dataclass
class Corpus:
    """Pairs per split; every pair of one English sentence lands in the same split."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]


def read_pairs(path: Path = CORPUS, *, check_sha256: bool = True) -> list[Pair]:
    """All `English<TAB>French` lines of the gzipped corpus, in file order."""
    if not path.exists():
        raise FileNotFoundError(f"corpus not found at {path}; it ships with the repository (git checkout data/)")
    raw = gzip.open(path, "rb").read()
    if check_sha256 and hashlib.sha256(raw).hexdigest() != CORPUS_SHA256:
        raise ValueError(f"{path} is not the expected corpus (sha256 mismatch); restore it with git checkout")
    pairs = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        english, sep, french = line.partition("\t")
        if not sep or not english.strip() or not french.strip():
            raise ValueError(f"{path}:{n}: expected 'English<TAB>French', got {line[:80]!r}")
        pairs.append(Pair(english, french.split("\t")[0]))
    return pairs


def split_of(source_key: str, valid_permille: int, test_permille: int) -> str:
    """Deterministic split of one (normalized) English sentence, from a hash: stable across runs,
    machines and corpus order, and never spreads one sentence over two splits."""
    bucket = int.from_bytes(hashlib.sha256(source_key.encode("utf-8")).digest()[:8], "big") % 1000
    if bucket < test_permille:
        return "test"
    return "valid" if bucket < test_permille + valid_permille else "train"


def build_corpus(
    pairs: list[Pair],
    source: Tokenizer,
    target: Tokenizer,
    *,
    max_words: int,
    valid_permille: int = 50,
    test_permille: int = 50,
) -> Corpus:
    """Keep pairs with at most `max_words` tokens on both sides, then split by English sentence."""
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for pair in pairs:
        src, tgt = source.tokenize(pair.english), target.tokenize(pair.french)
        if not src or not tgt or len(src) > max_words or len(tgt) > max_words:
            continue
        out[split_of(" ".join(src), valid_permille, test_permille)].append(pair)
    return Corpus(**out)


def group_references(pairs: list[Pair], source: Tokenizer) -> list[tuple[str, list[str]]]:
    """(English, [all its French references]) per distinct normalized English sentence, in order."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for pair in pairs:
        key = " ".join(source.tokenize(pair.english))
        groups.setdefault(key, (pair.english, []))[1].append(pair.french)
    return list(groups.values())


@dataclass
class Batch:
    src_ids: torch.Tensor  # (B, S) English ids ending in <eos>, 0-padded
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, U) <sos> + French ids, 0-padded
    tgt_out: torch.Tensor  # (B, U) French ids + <eos>, 0-padded (0 is ignored by the loss)

    @property
    def n_tokens(self) -> int:
        return int((self.tgt_out != 0).sum())


def encode_pairs(pairs: list[Pair], source: Tokenizer, target: Tokenizer) -> list[tuple[list[int], list[int]]]:
    """(English ids with <eos>, French ids without <eos>) per pair."""
    encoded = []
    for pair in pairs:
        src = source.encode(pair.english).ids
        tgt = target.encode(pair.french).ids[:-1]
        encoded.append((src, tgt))
    return encoded


def make_batches(
    examples: list[tuple[list[int], list[int]]], batch_size: int, *, seed: int | None
) -> list[Batch]:
    """Batches of similar source length (less padding, faster GRU); shuffled when `seed` is set.

    Shuffle, cut into pools of 50 batches, sort each pool by length, batch, shuffle the batches:
    random order from epoch to epoch, yet little padding inside a batch.
    """
    order = list(range(len(examples)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    pool = batch_size * 50
    chunks: list[list[int]] = []
    for start in range(0, len(order), pool):
        part = sorted(order[start : start + pool], key=lambda i: (len(examples[i][0]), len(examples[i][1])))
        chunks += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    if seed is not None:
        random.Random(seed + 1).shuffle(chunks)
    batches = []
    for idx in chunks:
        src_ids, src_lengths = pad_batch([examples[i][0] for i in idx])
        tgt_in, _ = pad_batch([[SOS_ID] + examples[i][1] for i in idx])
        tgt_out, _ = pad_batch([examples[i][1] + [EOS_ID] for i in idx])
        batches.append(Batch(src_ids, src_lengths, tgt_in, tgt_out))
    return batches
