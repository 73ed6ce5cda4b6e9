#!/usr/bin/env python3
"""Peer for `engram bench generate`: llama.cpp (llama-cpp-python) on CPU.

Loads --gguf with --threads threads, then --runs times: prefill the prompt
token ids of --tokens (a JSON list), and decode --decode tokens greedily
(end of turn ignored). Prints {"prefill": [s...], "decode": [s...]}.
"""
import argparse
import json
import time

import numpy as np
from llama_cpp import Llama, __version__

parser = argparse.ArgumentParser()
parser.add_argument("--gguf", required=True)
parser.add_argument("--tokens", required=True)
parser.add_argument("--decode", type=int, default=128)
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--runs", type=int, default=3)
args = parser.parse_args()

tokens = json.load(open(args.tokens))
llm = Llama(
    model_path=args.gguf,
    n_threads=args.threads,
    n_threads_batch=args.threads,
    n_ctx=len(tokens) + args.decode + 16,
    n_batch=max(512, len(tokens)),
    verbose=False,
)


def next_token():
    """Greedy choice from the last position's logits (llama-cpp-python keeps
    `scores` only with logits_all; read the context's logits directly)."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def one_pass():
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    prefill = time.perf_counter() - start
    token = next_token()
    start = time.perf_counter()
    for _ in range(args.decode):
        llm.eval([token])
        token = next_token()
    return prefill, time.perf_counter() - start


one_pass()  # warm-up
results = [one_pass() for _ in range(args.runs)]
print(json.dumps({"prefill": [r[0] for r in results], "decode": [r[1] for r in results], "version": __version__}))
