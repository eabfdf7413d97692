"""What the relay reports as it works (api/metrics.py counts it): its hooks, no-ops by default."""

from __future__ import annotations


class RelayHooks:
    """What the relay reports as it works; each hook is a no-op here (api/metrics.py overrides them).

    Hooks run inline on the event loop, in the relay's hot path: they must be quick and must not raise.
    """

    def on_read(self, entries: int) -> None:
        """A round of reads (one pipeline of XRANGEs) returned, with `entries` entries of followed jobs."""

    def on_notified(self, entries: int) -> None:
        """A notification carried `entries` entries of a followed job, relayed without a read."""

    def on_read_failed(self, error: Exception) -> None:
        """A round of reads failed; the relay retries by itself."""

    def on_sent(self, events: int, tokens: int) -> None:
        """Readers were handed `events` events, `tokens` of them `token` events (summed over readers)."""

    def on_reader_dropped(self) -> None:
        """A reader fell `client_buffer_events` behind and was cut off (it resumes by id)."""
