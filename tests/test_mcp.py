"""The app's MCP server (`/gradio_api/mcp/`): the memory as tools for agents. The app runs on
the tiny model (`app_server` in conftest)."""

from __future__ import annotations

import asyncio
import json

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

TOOLS = {"retrieve_memories", "add_memory", "chat"}


async def session_call(url: str, calls: list[tuple[str, dict]]) -> tuple[dict, list]:
    async with streamable_http_client(url + "/gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return {tool.name: tool for tool in listed.tools}, results


def text(result) -> str:
    assert not result.isError, result.content
    return "".join(block.text for block in result.content if block.type == "text")


def test_agents_see_three_documented_tools_and_can_use_the_memory(app_server):
    calls = [
        ("add_memory", {"content": "Alex solved ZEBRAQUOKKA puzzles all week", "memory_type": "insight"}),
        ("retrieve_memories", {"query": "ZEBRAQUOKKA puzzles", "max_memories": 3}),
        ("chat", {"message": "What puzzles does Alex like?", "max_new_tokens": 16}),
    ]
    tools, (added, retrieved, answered) = asyncio.run(session_call(app_server.url, calls))
    assert TOOLS <= set(tools), sorted(tools)
    retrieve = tools["retrieve_memories"]
    assert "query" in retrieve.inputSchema["properties"] and "useful for a query" in retrieve.description
    assert "content" in tools["add_memory"].inputSchema["properties"]
    assert json.loads(text(added))["memories"] == 152
    memories = json.loads(text(retrieved))
    assert memories[0]["content"] == "Alex solved ZEBRAQUOKKA puzzles all week", "what an agent added, it finds"
    assert isinstance(text(answered), str)
