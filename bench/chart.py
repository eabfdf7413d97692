"""Draws the concurrency sweeps: tokens/s (throughput) and token lag p50/p99 (latency) per implementation."""

from __future__ import annotations

COLORS = {"tokenrelay": "#2563eb", "direct": "#16a34a", "naive": "#dc2626"}


def draw(sweeps: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, data in sweeps.items():
        color = COLORS.get(name)
        points = data["throughput"]
        left.plot([p["concurrency"] for p in points], [p["tokens_per_s"] for p in points], "o-", color=color,
                  label=name)
        points = data["latency"]
        right.plot([p["concurrency"] for p in points], [p["lag_p50_ms"] for p in points], "o-", color=color,
                   label=f"{name} p50")
        right.plot([p["concurrency"] for p in points], [p["lag_p99_ms"] for p in points], "o--", color=color,
                   label=f"{name} p99")
    left.set(title="Throughput: jobs at full speed, one reader each", xlabel="concurrent jobs",
             ylabel="tokens/s delivered")
    right.set(title="Lag: jobs at 10 tokens/s, one reader each", xlabel="concurrent jobs",
              ylabel="production -> client (ms)", yscale="log")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
