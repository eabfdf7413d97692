"""Reading Prometheus metrics the way Prometheus reads them."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .processes import wait_until


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(url: str, condition, message: str):
    """Scrape until `condition(samples)` holds; returns those samples."""
    def attempt():
        samples = scrape(url)
        return samples if condition(samples) else None

    return wait_until(attempt, message=message)
