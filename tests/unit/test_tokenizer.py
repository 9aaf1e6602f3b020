"""The one tokenizer: normalization, unknown words, <eos>, truncation, CJK, determinism."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gru_encoder.core.tokenizer import (
    EOS,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    InputTooLongError,
    Tokenizer,
    TokenizerConfig,
    normalize,
)

CORPUS_LIKE = ["I'm cold.", "He is tall.", "I am cold!", "Don't go.", "She is cold."]


@pytest.fixture
def tok() -> Tokenizer:
    return Tokenizer.build(CORPUS_LIKE, TokenizerConfig(max_length=6))


def test_specials_have_fixed_ids(tok: Tokenizer) -> None:
    assert tok.itos[:4] == list(SPECIALS) == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert (PAD_ID, EOS_ID, UNK_ID) == (0, 2, 3) and tok.pad_id == 0


def test_eos_appended_as_in_training(tok: Tokenizer) -> None:
    enc = tok.encode("I am cold.")
    assert enc.tokens == ["i", "am", "cold", ".", EOS]
    assert enc.ids[-1] == EOS_ID and len(enc.ids) == len(enc.tokens)
    assert UNK_ID not in enc.ids and not enc.truncated


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Il fait froid\u202f!", "il fait froid !"),  # narrow no-break space before "!"
        ("«\u00a0Oui\u00a0»", "« oui »"),  # no-break spaces inside guillemets
        ("Café  CRÈME", "cafe creme"),  # accents folded, spaces collapsed
        ("ＡＢＣ１２３", "abc123"),  # full-width forms (NFKC)
        ("Straße", "strasse"),  # casefold
        ("don\u2019t", "don't"),  # typographic apostrophe
        ("a\x00b\tc\n", "a b c"),  # NUL and control characters are spaces
        ("   ", ""),
    ],
)
def test_normalization(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(expected) == expected  # idempotent


def test_accents_kept_when_folding_is_off() -> None:
    assert normalize("Ça été", fold_accents=False) == "ça été"


def test_punctuation_split_and_contractions(tok: Tokenizer) -> None:
    assert tok.tokenize("Don't go, Tom!") == ["don't", "go", ",", "tom", "!"]
    assert tok.tokenize("'quoted'") == ["'", "quoted", "'"]
    assert tok.tokenize("...") == [".", ".", "."]


def test_unknown_words_map_to_unk_but_keep_their_token(tok: Tokenizer) -> None:
    enc = tok.encode("He is zorblax.")
    assert enc.tokens == ["he", "is", "zorblax", ".", EOS]
    assert enc.ids[2] == UNK_ID and enc.ids.count(UNK_ID) == 1


def test_cjk_characters_are_one_token_each(tok: Tokenizer) -> None:
    assert tok.tokenize("我爱你") == ["我", "爱", "你"]
    assert tok.tokenize("日本語とEnglish。") == ["日", "本", "語", "と", "english", "。"]
    assert tok.tokenize("한국어") == ["한", "국", "어"]
    enc = tok.encode("我爱")
    assert enc.ids == [UNK_ID, UNK_ID, EOS_ID]  # unseen, but not one giant unknown word


def test_emoji_is_a_token(tok: Tokenizer) -> None:
    assert tok.tokenize("cold 🥶!") == ["cold", "🥶", "!"]


def test_truncation_is_explicit(tok: Tokenizer) -> None:
    text = "he is cold he is tall he is"  # 8 words, max_length=6 keeps 5 words + <eos>
    enc = tok.encode(text)
    assert enc.truncated and enc.n_words == 8
    assert enc.tokens == ["he", "is", "cold", "he", "is", EOS] and len(enc.ids) == 6
    with pytest.raises(InputTooLongError, match="9 tokens with <eos>, more than max_length=6") as err:
        tok.encode(text, truncate=False)
    assert (err.value.n_tokens, err.value.max_length) == (9, 6)
    exact = tok.encode("he is cold he is", truncate=False)  # exactly max_length with <eos>
    assert not exact.truncated and len(exact.ids) == 6


def test_empty_text_is_just_eos(tok: Tokenizer) -> None:
    enc = tok.encode("  ")
    assert enc.tokens == [EOS] and enc.ids == [EOS_ID]


def test_vocab_is_frequency_ranked_and_independent_of_input_order() -> None:
    a = Tokenizer.build(CORPUS_LIKE)
    b = Tokenizer.build(list(reversed(CORPUS_LIKE)))
    assert a.itos == b.itos
    assert a.itos[4] == "."  # most frequent first (5 times), then "cold"
    assert a.itos[5] == "cold"
    assert "tall" not in Tokenizer.build(CORPUS_LIKE, min_freq=2).stoi


def test_decode_stops_at_eos_and_skips_specials(tok: Tokenizer) -> None:
    ids = tok.encode("he is cold").ids
    assert tok.decode([1] + ids + [5, 6]) == ["he", "is", "cold"]


def test_save_load_roundtrip(tok: Tokenizer, tmp_path) -> None:
    path = tmp_path / "vocab.json"
    tok.save(path)
    data = json.loads(path.read_text("utf-8"))
    assert data["format"] == "gru_encoder.vocab/1" and data["config"]["max_length"] == 6
    again = Tokenizer.load(path)
    assert again.itos == tok.itos and again.config == tok.config
    assert again.encode("I'm cold 我").ids == tok.encode("I'm cold 我").ids


def test_bad_vocab_is_refused() -> None:
    with pytest.raises(ValueError, match="must start with"):
        Tokenizer(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer(list(SPECIALS) + ["x", "x"])
    with pytest.raises(ValueError, match="max_length"):
        TokenizerConfig(max_length=1)


def test_deterministic_across_processes(tok: Tokenizer, tmp_path) -> None:
    """Same ids in a fresh interpreter with a different hash seed (no set/dict-order dependence)."""
    path = tmp_path / "vocab.json"
    tok.save(path)
    texts = ["I'm cold.", "Café, 我爱你!", "zorblax  is\u202ftall", "ＡＢＣ"]
    code = (
        "import json,sys; from gru_encoder.core.tokenizer import Tokenizer; t=Tokenizer.load(sys.argv[1]); "
        f"print(json.dumps([t.encode(x).ids for x in {texts!r}]))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] == json.dumps([tok.encode(x).ids for x in texts]) + "\n"
