"""Settings every test stack runs with."""

# Short leases so tests of a lost worker finish in seconds.
TEST_SETTINGS = {
    "lease_ttl_s": 2,
    "reaper_interval_s": 0.25,
    "models": "demo,openai:echo,openai:drop-after-3,openai:error-401,openai:flaky-3,openai:unavailable-once,"
              "openai:error-500,openai:flaky-1",
    # Provider retries fast, so tests of a flaky provider finish quickly.
    "provider_retry_delays_s": "0.05,0.1",
    # Quotas have tests of their own (test_quotas.py); here they must not get in the way.
    "rate_limit_per_minute": 1_000_000,
    "max_active_jobs_per_key": 100_000,
}

# How many models the test stacks offer (the web page lists each).
MODEL_COUNT = len(TEST_SETTINGS["models"].split(","))
