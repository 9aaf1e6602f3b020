"""What one request can cost a worker: the encode path in-process (what a TorchServe worker runs for it,
with the serving settings' limits and one torch thread, as each of the 2 workers on 2 CPUs has), for the
requests that cost the most per byte sent, then a random search around them. Prints CPU milliseconds
(process time, best and worst of --repeat runs) per request; exits 1 over --bound-ms.

    python -m reliability.worst_case                 # the shipped model (runs/default)
    python -m reliability.worst_case --run-dir runs/smoke --search 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.api.service import EncoderService
from gru_encoder.host.settings import ServingSettings
from loadtests.workload import ROOT

# One character repeated: U+FDFA (18 characters under NFKC), CJK and Hangul (a token a character;
# Hangul is decomposed and recomposed by accent folding), accents, punctuation, plain words.
CASES = {"U+FDFA": "\ufdfa", "CJK": "\u4e00", "Hangul": "\uac00", "accents": "\u00e9", "punctuation": "!",
         "words": "i am cold . "}
# The characters a search mixes (ligatures, circled and squared forms expand under NFKC too).
ALPHABET = ["\ufdfa", "\u3390", "\ufb03", "\u2474", "\u4e00", "\uac00", "\u0301", "\u00e9", "\u00df", "!", " ", "a"]


def cost_ms(service: EncoderService, body: bytes, repeat: int) -> tuple[list[float], int, str]:
    """CPU milliseconds of each run of one request, its status and error type."""
    costs = []
    for _ in range(repeat):
        start = time.process_time()
        [(status, reply)] = service.handle([body])
        costs.append(1000 * (time.process_time() - start))
    kind = "" if status == 200 else json.loads(reply)["type"]
    return costs, status, kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "default"))
    parser.add_argument("--repeat", type=int, default=5, help="runs of each request")
    parser.add_argument("--search", type=int, default=100, help="random requests of the alphabet to try")
    parser.add_argument("--bound-ms", type=float, default=250.0, help="exit 1 when a request costs more")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = ServingSettings.from_env()
    limits = settings.limits()
    service = EncoderService(load_encoder(Path(args.run_dir)), limits)
    n, chars = limits.max_texts, limits.max_text_chars
    print(f"{args.run_dir}: {n} texts x {chars:,} characters; limits: {limits.describe()}")
    worst = 0.0
    for name, unit in CASES.items():
        text = (unit * chars)[:chars]
        for truncate in (True, False):
            for wanted in (["hidden"], ["output", "hidden"]):
                body = json.dumps({"texts": [text] * n, "truncate": truncate, "return": wanted}).encode()
                costs, status, kind = cost_ms(service, body, args.repeat)
                worst = max(worst, max(costs))
                print(f"  {name:12} truncate={str(truncate):5} {'+'.join(wanted):13} {len(body):>9,} bytes -> "
                      f"{status} {kind:18} {min(costs):6.1f}-{max(costs):6.1f} ms")
    rng = random.Random(0)
    found = (0.0, "")
    for _ in range(args.search):
        texts = []
        for _ in range(rng.randint(1, n)):
            unit = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6)))
            length = rng.choice([chars, rng.randint(1, chars)])
            texts.append((unit * (length // len(unit) + 1))[:length])
        body = json.dumps({"texts": texts, "truncate": rng.random() < 0.7, "return": ["hidden"]}).encode()
        costs, status, kind = cost_ms(service, body, 1)
        if costs[0] > found[0]:
            found = (costs[0], f"{len(texts)} texts, {len(body):,} bytes -> {status} {kind}")
    worst = max(worst, found[0])
    print(f"  random search, {args.search} requests: the costliest {found[0]:.1f} ms ({found[1]})")
    print(f"worst: {worst:.1f} ms of CPU per request (bound {args.bound_ms:.0f} ms)")
    return 0 if worst <= args.bound_ms else 1


if __name__ == "__main__":
    sys.exit(main())
