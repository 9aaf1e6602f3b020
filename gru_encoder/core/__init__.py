"""The model core: the encoder (model.py), its tokenizer (tokenizer.py) and its saved artifacts
(artifacts.py). Imports nothing else of the project; training, the API floor and the tools build on it."""
