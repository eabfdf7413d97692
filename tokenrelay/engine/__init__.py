"""What runs on the workers: chat models and graphs turned into stream events. Knows neither Celery,
Redis nor HTTP."""
