#!/usr/bin/env python3
"""Writes vectors.json for the wireless plugin from known synthetic channels.

Each vector's expected values are the channel's true parameters (K-factor,
Doppler shift, fading type); the script checks that the estimator the plugin
implements recovers them within the stated tolerance before writing, so a
vector never encodes an estimator's error. Deterministic (seeded).
"""
import cmath
import json
import math
import random
from pathlib import Path

rng = random.Random(20261126)
C = 299_792_458.0


def cn(sigma2=1.0):
    """A circular complex Gaussian sample of variance sigma2."""
    s = math.sqrt(sigma2 / 2)
    return complex(rng.gauss(0, s), rng.gauss(0, s))


def pairs(values, places=6):
    return [[round(v.real, places), round(v.imag, places)] for v in values]


vectors = []

# Line of sight: a strong first path and four weak echoes: K = 1 / (4 * 0.04) = 6.25.
taps = [1.0 + 0j] + [0.2 * cmath.exp(1j * rng.uniform(0, 2 * math.pi)) for _ in range(4)]
vectors.append({"tool": "line_of_sight", "arguments": {"taps": pairs(taps)}, "tolerance": 1e-3,
                "expected": {"k_factor": 6.25, "k_factor_db": round(10 * math.log10(6.25), 2),
                             "first_path_index": 0, "strongest_path_index": 0,
                             "first_path_power_ratio": round(1 / 1.16, 4), "los": True}})
# Blocked direct path: the first arrival is weak, the strongest comes later. K = 0.81 / 0.54 = 1.5.
mags = [0.3, 0.5, 0.9, 0.4, 0.2]
taps = [m * cmath.exp(1j * rng.uniform(0, 2 * math.pi)) for m in mags]
total = sum(m * m for m in mags)
vectors.append({"tool": "line_of_sight", "arguments": {"taps": pairs(taps)}, "tolerance": 1e-3,
                "expected": {"k_factor": 1.5, "k_factor_db": round(10 * math.log10(1.5), 2),
                             "first_path_index": 0, "strongest_path_index": 2,
                             "first_path_power_ratio": round(0.09 / total, 4), "los": False}})

# Doppler: a tone at f_d in light noise, 10 kHz sampling, 2.4 GHz carrier.
for shift in (123.4, -250.0):
    fs, n = 10_000.0, 2000
    samples = [cmath.exp(2j * math.pi * shift * k / fs) + cn(0.05 ** 2) for k in range(n)]
    acc = sum(samples[k + 1] * samples[k].conjugate() for k in range(n - 1))
    estimate = cmath.phase(acc) * fs / (2 * math.pi)
    assert abs(estimate - shift) <= 0.005 * abs(shift), (estimate, shift)
    vectors.append({"tool": "doppler", "tolerance": 0.005,
                    "arguments": {"samples": pairs(samples, 5), "sample_rate_hz": fs, "carrier_hz": 2.4e9},
                    "expected": {"doppler_hz": shift, "unambiguous_range_hz": fs / 2,
                                 "radial_speed_mps": round(shift * C / 2.4e9, 3)}})


def moments(env):
    m2 = sum(r * r for r in env) / len(env)
    m4 = sum(r ** 4 for r in env) / len(env)
    gamma = (m4 - m2 * m2) / (m2 * m2)
    s = math.sqrt(max(0.0, 1 - gamma)) if gamma < 1 else 0.0
    return (s / (1 - s) if gamma < 1 else 0.0), 1 / gamma


# Fading: Rayleigh (K = 0, m = 1) and Rician K = 6 (m = (K+1)^2 / (2K+1)).
n = 20_000
rayleigh = [abs(cn()) for _ in range(n)]
k, m = moments(rayleigh)
assert k < 0.15 and abs(m - 1) < 0.1, (k, m)
vectors.append({"tool": "fading", "tolerance": 0.15, "arguments": {"envelope": [round(r, 4) for r in rayleigh]},
                "expected": {"k_factor": 0.0, "nakagami_m": 1.0, "type": "Rayleigh"}})
K = 6.0
phase = rng.uniform(0, 2 * math.pi)
rician = [abs(math.sqrt(K / (K + 1)) * cmath.exp(1j * phase) + cn(1 / (K + 1))) for _ in range(n)]
k, m = moments(rician)
assert abs(k - K) <= 0.15 * K and abs(m - (K + 1) ** 2 / (2 * K + 1)) <= 0.15 * m, (k, m)
vectors.append({"tool": "fading", "tolerance": 0.15, "arguments": {"envelope": [round(r, 4) for r in rician]},
                "expected": {"k_factor": K, "nakagami_m": round((K + 1) ** 2 / (2 * K + 1), 3), "type": "Rician"}})

out = Path(__file__).with_name("vectors.json")
out.write_text(json.dumps(vectors, separators=(",", ":")) + "\n")
print(f"{len(vectors)} vectors -> {out} ({out.stat().st_size // 1024} KiB)")
