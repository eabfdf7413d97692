"""What gateways and workers share: the stream protocol, Redis keys and scripts, settings, sending a job.

Nothing here imports LangChain, the worker or the CLI.
"""
