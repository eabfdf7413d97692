"""`tokenrelay graph`, run as a real subprocess against the shared stack: the README's example commands."""

from __future__ import annotations

from tokenrelay import Client

from ..support.cli import cli


def test_graph_command_runs_the_calculator_agent_and_prints_the_tool_call(gateway_url, client: Client):
    result = cli("graph", "calculator_agent", "--question", "what is the square root of 71?",
                 "--stream-mode", "messages,updates", "--events", "token,tool_call,tool_result,end",
                 "--tokens-per-second", "0", "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The result is 8.426149773176359.\n"
    assert '[calling calculator {"expression": "sqrt(71)"}]' in result.stderr
    assert "[calculator returned 8.426149773176359]" in result.stderr
    job_id = result.stderr.splitlines()[0].removeprefix("job ")
    assert client.get(job_id)["output"]["text"] == "The result is 8.426149773176359."


def test_graph_command_follows_only_the_poem(gateway_url, client: Client):
    result = cli("graph", "joke_poem", "--input", '{"topic": "cats"}', "--tags", "poem",
                 "--tokens-per-second", "0", "--max-tokens", "12", "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    job_id = result.stderr.splitlines()[0].removeprefix("job ")
    assert result.stdout == client.get(job_id)["output"]["state"]["poem"] + "\n"


def test_graph_command_prints_custom_tokens_and_progress(gateway_url, client: Client):
    result = cli("graph", "custom_progress", "--input", '{"topic": "rivers", "steps": 2}', "--stream-mode", "custom",
                 "--tokens-per-second", "0", "--max-tokens", "6", "--url", gateway_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You asked: Write about rivers Here\n"
    assert '[custom] {"data": {"stage": "preparing", "step": 1, "of": 2}}' in result.stderr


def test_graph_command_with_an_unknown_graph_exits_1_listing_the_known_ones(gateway_url):
    result = cli("graph", "nope", "--url", gateway_url)
    assert result.returncode == 1 and "joke_poem" in result.stderr and "calculator_agent" in result.stderr
    assert cli("graph", "joke_poem", "--input", "[1]", "--url", gateway_url).returncode == 2
