"""`calculator_agent`: a tool-calling agent (model node + calculator tool node) in plain LangGraph.

Offline, the `demo` model turns arithmetic in the question into a calculator call.
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from tokenrelay.engine.arithmetic import NotArithmetic, evaluate, format_number

SYSTEM = "You are a careful assistant. Use the calculator tool for any arithmetic, then answer in one sentence."


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `sqrt(71)` or `3 * (4 + 2)`."""
    try:
        return format_number(evaluate(expression))
    except NotArithmetic as exc:
        return f"error: {exc}"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build(model: BaseChatModel):
    bound = model.bind_tools([calculator])

    async def call_model(state: State) -> State:
        return {"messages": [await bound.ainvoke([SystemMessage(SYSTEM), *state["messages"]])]}

    graph = StateGraph(State)
    graph.add_node("call_model", call_model)
    graph.add_node("tools", ToolNode([calculator]))
    graph.add_edge(START, "call_model")
    graph.add_conditional_edges("call_model", tools_condition)
    graph.add_edge("tools", "call_model")
    return graph.compile()
