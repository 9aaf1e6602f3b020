"""The serving host: the launcher (serve.py) that runs TorchServe and the local gateway, the serving
settings it resolves, the handler's metrics, and what the launcher changes in TorchServe's worker and
Java (the worker patch, the batch-fill agent's vmargs). Imports the API floor and the model core."""
