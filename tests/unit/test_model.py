"""The encoder: PyTorch's shape conventions, and padding that never changes a result."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from gru_encoder.core.model import Encoder, EncoderConfig, pad_batch

VOCAB, HIDDEN = 50, 16
GRID = list(itertools.product([1, 2], [False, True]))  # num_layers x bidirectional


def make_encoder(num_layers: int, bidirectional: bool, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    dropout = 0.3 if num_layers > 1 else 0.0  # set, to show eval() switches it off
    cfg = EncoderConfig(VOCAB, HIDDEN, num_layers, bidirectional, dropout)
    return Encoder(cfg).eval()


def random_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in lengths]
    return pad_batch(seqs)


@pytest.mark.parametrize("num_layers,bidirectional", GRID)
def test_shapes_follow_nn_gru(num_layers: int, bidirectional: bool) -> None:
    enc = make_encoder(num_layers, bidirectional)
    ids, lengths = random_batch([5, 3, 7])
    d = 2 if bidirectional else 1
    with torch.no_grad():
        output, hidden = enc(ids, lengths)
        # The same shapes nn.GRU(batch_first=True) itself gives on unpadded input.
        ref_out, ref_hidden = enc.gru(enc.embedding(ids))
    assert output.shape == (3, 7, d * HIDDEN) == ref_out.shape
    assert hidden.shape == (num_layers * d, 3, HIDDEN) == ref_hidden.shape


@pytest.mark.parametrize("num_layers,bidirectional", GRID)
def test_each_sequence_of_a_padded_batch_equals_nn_gru_alone(num_layers: int, bidirectional: bool) -> None:
    enc = make_encoder(num_layers, bidirectional)
    lengths_list = [2, 9, 1, 6, 9, 4]
    ids, lengths = random_batch(lengths_list)
    # A separate nn.GRU with the same weights, run on each sequence with no padding at all.
    ref = nn.GRU(HIDDEN, HIDDEN, num_layers, batch_first=True, bidirectional=bidirectional).eval()
    ref.load_state_dict(enc.gru.state_dict())
    with torch.no_grad():
        output, hidden = enc(ids, lengths)
        for i, n in enumerate(lengths_list):
            alone_out, alone_hidden = ref(enc.embedding(ids[i : i + 1, :n]))  # (1, n, D*H), (L*D, 1, H)
            torch.testing.assert_close(output[i, :n], alone_out[0], atol=1e-6, rtol=0)
            torch.testing.assert_close(hidden[:, i], alone_hidden[:, 0], atol=1e-6, rtol=0)
            assert torch.count_nonzero(output[i, n:]) == 0, "padded output positions must be exactly 0"


@pytest.mark.parametrize("num_layers,bidirectional", GRID)
def test_a_sentence_gives_the_same_tensors_alone_or_beside_a_longer_one(num_layers: int, bidirectional: bool) -> None:
    enc = make_encoder(num_layers, bidirectional)
    short = [7, 8, 9]
    ids, lengths = pad_batch([short, list(range(1, 20))])
    with torch.no_grad():
        out_alone, hidden_alone = enc(*pad_batch([short]))
        out_batch, hidden_batch = enc(ids, lengths)
    torch.testing.assert_close(out_batch[0, :3], out_alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden_batch[:, 0], hidden_alone[:, 0], atol=1e-6, rtol=0)
    assert out_batch.shape[1] == 19 and torch.count_nonzero(out_batch[0, 3:]) == 0


def test_output_keeps_input_length_when_all_sequences_are_shorter() -> None:
    enc = make_encoder(1, False)
    ids = torch.tensor([[3, 4, 0, 0], [5, 0, 0, 0]])
    with torch.no_grad():
        output, _ = enc(ids, torch.tensor([2, 1]))
    assert output.shape == (2, 4, HIDDEN)


def test_h0_is_used_and_in_batch_order() -> None:
    enc = make_encoder(2, False)
    ids, lengths = random_batch([4, 6])
    h0 = torch.randn(2, 2, HIDDEN)
    with torch.no_grad():
        _, hidden = enc(ids, lengths, h0)
        _, hidden_zero = enc(ids, lengths)
        # Row 1 alone with its own h0 slice: h0 must follow the caller's batch order.
        _, hidden_1 = enc(ids[1:, :6], lengths[1:], h0[:, 1:].contiguous())
    assert not torch.allclose(hidden, hidden_zero)
    torch.testing.assert_close(hidden[:, 1], hidden_1[:, 0], atol=1e-6, rtol=0)


def test_continuing_from_hidden_equals_one_pass_over_the_concatenation() -> None:
    enc = make_encoder(2, False)
    first, second = [5, 6, 7], [8, 9]
    with torch.no_grad():
        _, h_first = enc(*pad_batch([first]))
        out_second, h_second = enc(*pad_batch([second]), h_first)
        out_all, h_all = enc(*pad_batch([first + second]))
    torch.testing.assert_close(h_second, h_all, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_second[0], out_all[0, 3:], atol=1e-6, rtol=0)


def test_lengths_default_to_full_sequences() -> None:
    enc = make_encoder(1, True)
    ids, _ = random_batch([5, 5])
    with torch.no_grad():
        a = enc(ids)
        b = enc(ids, torch.tensor([5, 5]))
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize(
    "lengths,h0_shape,match",
    [
        ([0, 3], None, "every length"),
        ([4, 3], None, "every length"),
        ([3], None, "lengths must have shape"),
        ([3, 2], (2, 2, HIDDEN), "h0 must have shape"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(lengths, h0_shape, match) -> None:
    enc = make_encoder(1, False)
    ids, _ = random_batch([3, 2])
    h0 = torch.zeros(h0_shape) if h0_shape else None
    with pytest.raises(ValueError, match=match):
        enc(ids, torch.tensor(lengths), h0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(vocab_size=10, num_layers=1, dropout=0.2), "no effect with num_layers=1"),
        (dict(vocab_size=10, dropout=1.0), "dropout"),
        (dict(vocab_size=0), ">= 1"),
        (dict(vocab_size=10, pad_id=10), "pad_id"),
    ],
)
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**kwargs)


def test_padding_embedding_is_zero_and_gets_no_gradient() -> None:
    enc = make_encoder(1, False)
    assert torch.count_nonzero(enc.embedding.weight[0]) == 0
    ids = torch.tensor([[3, 0]])
    out, _ = enc(ids, torch.tensor([1]))
    out.sum().backward()
    assert torch.count_nonzero(enc.embedding.weight.grad[0]) == 0
