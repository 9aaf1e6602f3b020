"""How far batching moves a text's tensors: the encode path in-process (one torch thread, as each worker
has on 2 CPUs), random server batches of 2-16 one-text requests against each request's solo answer, and
the same batch sent twice. Prints the largest difference; exits 1 over --bound or when a batch sent twice
gives other bytes.

    python -m reliability.batch_invariance               # the shipped model (runs/default)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import orjson
import torch

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.api.service import EncoderService
from loadtests.workload import ROOT

TEXTS = ["i am cold .", "he is tall", "Tom didn't know what to say.", "we need to talk about what happened yesterday at the station .",
         "she plays the piano very well", "why are you laughing ?", "i can't believe it", "they went home early because it was raining hard",
         "this is the best book i have ever read", "where is the nearest train station ?", "hello", "我爱你", "café crème"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "default"))
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--bound", type=float, default=1e-5, help="the stated bound (docs/API.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    service = EncoderService(load_encoder(Path(args.run_dir)))

    def body(text: str) -> bytes:
        return json.dumps({"texts": [text]}).encode()

    alone = {t: orjson.loads(service.handle([body(t)])[0][1]) for t in TEXTS}
    rng = random.Random(0)
    worst, answers, identical, reproducible = 0.0, 0, 0, True
    for _ in range(args.batches):
        texts = [rng.choice(TEXTS) for _ in range(rng.randint(2, 16))]
        replies = service.handle([body(t) for t in texts])
        reproducible &= replies == service.handle([body(t) for t in texts])
        for text, (_, raw) in zip(texts, replies):
            got, ref = orjson.loads(raw), alone[text]
            diff = max(float(np.abs(np.asarray(got[k], np.float32) - np.asarray(ref[k], np.float32)).max()) for k in ("output", "hidden"))
            worst, answers, identical = max(worst, diff), answers + 1, identical + (diff == 0)
    print(f"{args.run_dir}: {answers} answers in {args.batches} random batches of 2-16 requests; "
          f"{identical} bit-identical to the solo answer; max |batched - alone| = {worst:.2e} (bound {args.bound:g}); "
          f"each batch sent twice: {'identical bytes' if reproducible else 'DIFFERENT bytes'}")
    return 0 if worst <= args.bound and reproducible else 1


if __name__ == "__main__":
    sys.exit(main())
