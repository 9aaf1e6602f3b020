"""The one tokenizer: text -> normalized word tokens -> ids, shared by training, serving and tests.

Normalization (in this order, all deterministic and table-free):
  1. control characters (C0/C1, including NUL) become spaces
  2. U+00A0 / U+202F (the corpus puts them before French punctuation) and other Unicode spaces -> " "
  3. Unicode NFKC (full-width forms, ligatures and compatibility characters fold to plain ones)
  4. lowercase (str.casefold: also folds "ß" -> "ss")
  5. optional accent folding: NFD, then drop combining marks ("café" -> "cafe"); typographic
     apostrophes become "'"
Tokenization: every CJK character is a token of its own; a run of letters/digits (with inner
apostrophes, "don't") is a word; every other non-space character is a token of its own.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, SOS, EOS, UNK)  # ids 0, 1, 2, 3 in every vocab
PAD_ID, SOS_ID, EOS_ID, UNK_ID = range(4)
VOCAB_FORMAT = "gru_encoder.vocab/1"

# Han (incl. extensions and compatibility ideographs), kana, Hangul syllables and CJK punctuation.
_CJK = (
    "\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f"
)
_TOKEN_RE = re.compile(
    rf"[{_CJK}]"  # one CJK character = one token
    rf"|(?:(?![{_CJK}])\w)+(?:'(?:(?![{_CJK}])\w)+)*"  # word, with inner apostrophes
    r"|[^\w\s]"  # any other visible character alone (punctuation, symbols, emoji)
)
_SPACES_RE = re.compile(r"[\s\u00a0\u202f\u2000-\u200b\u2060\ufeff]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything that changes what text maps to which ids (saved in vocab.json and config.json)."""

    lowercase: bool = True
    fold_accents: bool = True
    # Most tokens one text may have, counting the appended <eos>.
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length}: it counts <eos>, so it must be >= 2")


@dataclass(frozen=True)
class Encoding:
    """One text, tokenized. `tokens` and `ids` have the same length and end with <eos> (unless add_eos=False)."""

    tokens: list[str]
    ids: list[int]  # may be empty only for add_eos=False and a blank text
    truncated: bool  # True when words past max_length - 1 were dropped, or the text was cut to cut_chars
    n_words: int  # word tokens in the text before truncation (without <eos>)
    n_chars: int = 0  # characters after NFKC (before the word split): the work this text cost


class InputTooLongError(ValueError):
    """Raised by `encode(..., truncate=False)` for a text with more tokens than max_length."""

    def __init__(self, n_tokens: int, max_length: int):
        self.n_tokens, self.max_length = n_tokens, max_length
        super().__init__(
            f"text has {n_tokens} tokens with <eos>, more than max_length={max_length}; "
            "shorten it or ask for truncation"
        )


class NormalizedTooLongError(ValueError):
    """Raised by `normalize(..., max_chars=N)` when NFKC makes the text longer than N characters.

    NFKC can multiply a text's length (U+FDFA becomes 18 characters), and every later step costs in
    proportion: callers that serve requests bound it before those steps run."""

    def __init__(self, n_chars: int, max_chars: int):
        self.n_chars, self.max_chars = n_chars, max_chars
        super().__init__(f"text has {n_chars} characters after Unicode normalization (NFKC), more than {max_chars}")


def normalize(text: str, *, lowercase: bool = True, fold_accents: bool = True, max_chars: int | None = None) -> str:
    """Map text to its canonical form (see the module docstring); idempotent.

    max_chars: raise NormalizedTooLongError as soon as NFKC has produced more characters than this,
    before the costlier steps (casefold, accent folding, the word split) run on them."""
    return _normalize(text, lowercase, fold_accents, max_chars)[0]


def _normalize(text: str, lowercase: bool, fold_accents: bool, max_chars: int | None) -> tuple[str, int]:
    """normalize(), and how many characters NFKC produced."""
    text = _CONTROL_RE.sub(" ", text)
    text = _SPACES_RE.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    n_chars = len(text)
    if max_chars is not None and n_chars > max_chars:
        raise NormalizedTooLongError(n_chars, max_chars)
    if lowercase:
        text = text.casefold()
    if fold_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
        text = unicodedata.normalize("NFC", text)
    text = text.translate(_APOSTROPHES)
    return _SPACES_RE.sub(" ", text).strip(), n_chars


def split_tokens(normalized: str) -> list[str]:
    """Split already-normalized text into word, punctuation and single-CJK-character tokens."""
    # Apostrophes that do not sit between two word characters are punctuation ("'hello'").
    return _TOKEN_RE.findall(normalized)


class Tokenizer:
    """Word-level tokenizer with a fixed vocab: `<pad>`=0, `<sos>`=1, `<eos>`=2, `<unk>`=3."""

    def __init__(self, itos: list[str], config: TokenizerConfig = TokenizerConfig()):
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocab must start with {SPECIALS}, got {itos[:len(SPECIALS)]}")
        if len(set(itos)) != len(itos):
            raise ValueError("vocab has duplicate tokens")
        self.config = config
        self.itos = list(itos)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def tokenize(self, text: str) -> list[str]:
        """Normalized word tokens of `text` (no <eos>, no truncation)."""
        cfg = self.config
        return split_tokens(normalize(text, lowercase=cfg.lowercase, fold_accents=cfg.fold_accents))

    def encode(self, text: str, *, truncate: bool = True, add_eos: bool = True, max_chars: int | None = None,
               cut_chars: int | None = None) -> Encoding:
        """Tokens and ids of `text` with <eos> appended, as in training; unseen words get <unk>.

        add_eos=False is for feeding a long text in chunks (each continuing from the previous
        chunk's hidden state): only the last chunk should end the sentence.
        max_chars: NormalizedTooLongError when NFKC makes the text longer (see normalize).
        cut_chars: with truncate, first cut the raw text to this many characters (then flagged
        truncated), so that a long text costs no more than a short one; max_length tokens of
        ordinary text fit in far fewer characters than the default cut (2,048) holds.
        """
        cfg = self.config
        cut = truncate and cut_chars is not None and len(text) > cut_chars
        if cut:
            text = text[:cut_chars]
        normalized, n_chars = _normalize(text, cfg.lowercase, cfg.fold_accents, max_chars)
        words = split_tokens(normalized)
        tail = [EOS] if add_eos else []
        room = cfg.max_length - len(tail)
        if len(words) > room and not truncate:
            raise InputTooLongError(len(words) + len(tail), cfg.max_length)
        kept = words[:room]
        ids = [self.stoi.get(w, UNK_ID) for w in kept] + [EOS_ID] * len(tail)
        return Encoding(tokens=kept + tail, ids=ids, truncated=cut or len(words) > room, n_words=len(words),
                        n_chars=n_chars)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of `ids`, stopping at <eos> and skipping <pad>/<sos>."""
        out: list[str] = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, SOS_ID):
                out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    # --- building and saving -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        config: TokenizerConfig = TokenizerConfig(),
        *,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> "Tokenizer":
        """Vocab of the words in `texts` seen at least `min_freq` times, most frequent first."""
        probe = cls(list(SPECIALS), config)
        counts = Counter(tok for text in texts for tok in probe.tokenize(text))
        # Ties broken by the token itself, so the vocab never depends on input order.
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        ranked = [t for t in ranked if t not in SPECIALS][:max_size]
        return cls(list(SPECIALS) + ranked, config)

    def to_json(self) -> dict:
        return {"format": VOCAB_FORMAT, "config": asdict(self.config), "itos": self.itos}

    @classmethod
    def from_json(cls, data: dict) -> "Tokenizer":
        if data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"not a {VOCAB_FORMAT} file (format={data.get('format')!r})")
        return cls(data["itos"], TokenizerConfig(**data["config"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=0) + "\n", "utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        return cls.from_json(json.loads(Path(path).read_text("utf-8")))
