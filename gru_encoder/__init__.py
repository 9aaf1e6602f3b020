"""gru_encoder: the model, tokenizer and artifact format shared by training, serving and tests."""

from gru_encoder.artifacts import ArtifactError, LoadedEncoder, load_encoder, save_encoder
from gru_encoder.model import Encoder, EncoderConfig, pad_batch
from gru_encoder.tokenizer import Encoding, InputTooLongError, Tokenizer, TokenizerConfig

__all__ = [
    "ArtifactError",
    "Encoder",
    "EncoderConfig",
    "Encoding",
    "InputTooLongError",
    "LoadedEncoder",
    "Tokenizer",
    "TokenizerConfig",
    "load_encoder",
    "pad_batch",
    "save_encoder",
]
