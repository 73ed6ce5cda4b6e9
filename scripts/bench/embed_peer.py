#!/usr/bin/env python3
"""Peer for `engram bench embed`: sentence-transformers on CPU PyTorch.

Embeds the sentences of --sentences (one per line) with the model folder
--model, batch --batch, --threads intra-op threads, after a warm-up, --runs
times, and writes {"times": [s, ...], "vectors": [[...], ...], "torch": version}
to --out (engram takes the median of the times with its own percentile helper).
"""
import argparse
import json
import time

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--sentences", required=True)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--runs", type=int, default=1)
args = parser.parse_args()

import torch  # noqa: E402

torch.set_num_threads(args.threads)
from sentence_transformers import SentenceTransformer  # noqa: E402

model = SentenceTransformer(args.model, device="cpu")
sentences = open(args.sentences, encoding="utf-8").read().split("\n")
model.encode(sentences[: args.batch * 2], batch_size=args.batch)
times = []
for _ in range(max(args.runs, 1)):
    start = time.perf_counter()
    vectors = model.encode(sentences, batch_size=args.batch, convert_to_numpy=True)
    times.append(time.perf_counter() - start)
with open(args.out, "w") as out:
    json.dump({"times": times, "vectors": vectors.tolist(), "torch": torch.__version__}, out)
