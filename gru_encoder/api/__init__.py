"""The public API: the contract (responses, errors, the one error map), the request schema and its
limits, the encode service, its dialects (native, OpenAI, /info), the public route table and the
OpenAPI document generated from them. Imports the model core, never the serving host: the host passes
it the limits it needs. Importing this package imports nothing: the client uses contract.py with numpy
alone."""
