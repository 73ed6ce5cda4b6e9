"""Drives Engram's MCP server with the official Python `mcp` SDK, as an IDE
assistant would, and prints a JSON summary of what it saw for the Rust test
(tests/mcp.rs) to check.

    mcp_sdk_client.py --transport stdio --engram BIN [--data-dir DIR]
    mcp_sdk_client.py --transport http --url URL --token TOKEN
      [--mode legacy|2026-07-28] --plugins DIR --template DIR --collection NAME

Every step asserts what a client relies on; the first failure exits non-zero
with the step named.
"""

import argparse
import json
import os
import shutil
import sys

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TOPICS = [
    ("volcano.md", "Volcanoes erupt when magma rises through the crust.", "What makes magma erupt?"),
    ("whale.md", "Blue whales are the largest animals that ever lived.", "Which animal is the biggest ever?"),
    ("piano.txt", "A piano makes sound when hammers strike its strings.", "How does a piano produce sound?"),
    ("desert.txt", "The Sahara is the largest hot desert on Earth.", "Where is the largest hot desert?"),
    ("vaccine.md", "Vaccines train the immune system to recognise a pathogen.", "How do vaccines work?"),
    ("glacier.txt", "Glaciers form where snow accumulates faster than it melts.", "How are glaciers formed?"),
    ("bread.md", "Yeast makes bread rise by releasing carbon dioxide.", "Why does bread rise?"),
    ("comet.txt", "Comets grow tails of gas and dust near the Sun.", "Why do comets have tails?"),
]


def check(condition, step, detail):
    if not condition:
        print(f"FAILED at {step}: {detail}", file=sys.stderr)
        sys.exit(1)


async def run(args):
    summary = {"transport": args.transport, "mode": args.mode}
    changed = anyio.Event()
    updated = {}

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.setdefault(str(message.params.uri), anyio.Event()).set()

    if args.transport == "stdio":
        env = {k: v for k, v in os.environ.items() if k.startswith(("ENGRAM_", "XDG_")) or k in ("HOME", "PATH")}
        command = [args.engram, "mcp-stdio"] + (["--data-dir", args.data_dir] if args.data_dir else [])
        target = StdioServerParameters(command=command[0], args=command[1:], env=env)
        http = None
    else:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {args.token}"})
        target = streamable_http_client(args.url, http_client=http)

    async with Client(target, mode=args.mode, message_handler=on_message) as client:
        summary["protocol_version"] = client.protocol_version
        summary["server"] = client.server_info.name if client.server_info else None

        tools = {t.name: t for t in (await client.list_tools()).tools}
        summary["tools"] = sorted(tools)
        search = tools.get("rag_search")
        check(search is not None, "tools/list", sorted(tools))
        check("alpha" in search.input_schema["properties"], "rag_search schema", search.input_schema)
        check("tenant" not in search.input_schema["properties"], "rag_search hides tenant", search.input_schema)
        check(search.output_schema is not None, "rag_search output schema", search)
        check(search.annotations and search.annotations.read_only_hint, "rag_search annotations", search.annotations)

        result = await client.call_tool("calc__evaluate", {"expression": "2^10 / 3"})
        check(not result.is_error and result.structured_content["value"] == "1024/3", "plugin call", result)
        check(any(getattr(c, "text", None) for c in result.content), "text copy", result.content)
        summary["plugin_value"] = result.structured_content["value"]

        progress = []

        async def on_progress(done, total, message):
            progress.append([done, total, message])

        documents = [{"path": p, "text": t, "format": "markdown"} for p, t, _ in TOPICS]
        result = await client.call_tool(
            "rag_ingest", {"collection": args.collection, "documents": documents}, progress_callback=on_progress
        )
        check(not result.is_error, "rag_ingest", result)
        summary["ingested"] = result.structured_content["added"]
        summary["progress"] = progress

        questions = [{"question": q, "gold_paths": [p]} for p, _, q in TOPICS]
        result = await client.call_tool(
            "rag_calibrate", {"collection": args.collection, "alpha": 0.2, "holdout": 0, "questions": questions}
        )
        check(not result.is_error, "rag_calibrate", result)
        certificate = result.structured_content["certificate"]["id"]

        result = await client.call_tool(
            "rag_search", {"query": "Why does bread rise?", "collection": args.collection, "alpha": 0.2}
        )
        check(not result.is_error, "rag_search", result)
        certified = result.structured_content
        summary["certified"] = {
            "certificate": certified.get("certificate"),
            "calibrated": certificate,
            "coverage_guarantee": certified.get("coverage_guarantee"),
            "population": certified.get("population"),
            "questions_from": certified.get("questions_from"),
            "no_guarantee": certified.get("no_guarantee"),
            "paths": [h["path"] for h in certified.get("hits", [])],
        }

        # A call cancelled by the client: the SDK sends notifications/cancelled
        # (or, in 2026-07-28, closes the request's stream); the session lives on.
        with anyio.move_on_after(0.05) as scope:
            await client.call_tool("hostile__spin", {})
        summary["cancelled"] = scope.cancelled_caught
        result = await client.call_tool("calc__evaluate", {"expression": "6*7"})
        check(not result.is_error and result.structured_content["value"] == "42", "call after cancel", result)

        # Resources and the prompt.
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        summary["resources"] = resources
        read = await client.read_resource("engram://collections")
        summary["collections_resource"] = args.collection in read.contents[0].text
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        summary["prompts"] = prompts
        prompt = await client.get_prompt(
            "cite_evidence", {"question": "Why does bread rise?", "collection": args.collection, "alpha": "0.2"}
        )
        summary["prompt_cites"] = "bread.md" in json.dumps(prompt.model_dump(mode="json"))

        # list_changed: drop a plugin into the plugins directory (taking
        # out a copy an earlier run dropped in first).
        async def after_change(action):
            """Runs `action` on the plugins directory and waits for
            notifications/tools/list_changed (2026-07-28: on a listen stream)."""
            nonlocal changed
            changed = anyio.Event()
            with anyio.fail_after(30):
                if client.protocol_version >= "2026-07-28":
                    async with client.listen(tools_list_changed=True) as subscription:
                        action()
                        async for _event in subscription:
                            break
                else:
                    action()
                    await changed.wait()

        dropped = os.path.join(args.plugins, "template")
        if os.path.exists(dropped):
            await after_change(lambda: shutil.rmtree(dropped))
            tools = {t.name for t in (await client.list_tools()).tools}
            check("template__greet" not in tools, "tools after removing a plugin", sorted(tools))
        await after_change(lambda: shutil.copytree(args.template, dropped))
        summary["list_changed"] = True
        tools = {t.name for t in (await client.list_tools()).tools}
        check("template__greet" in tools, "tools after list_changed", sorted(tools))
        result = await client.call_tool("template__greet", {"name": "Ada"})
        check(not result.is_error, "the dropped-in tool", result)
        summary["greeting"] = result.content[0].text

        # A conversation's compact memory is a resource that says when it
        # changes: subscribe, append a turn, hear the summarizer's update.
        conversation = f"{args.collection}-chat"
        uri = f"engram://memory/{conversation}"

        async def remember():
            result = await client.call_tool(
                "memory_append",
                {"conversation": conversation, "speaker": "user", "text": "Our kayak trip to Lake Bled is on Saturday."},
            )
            check(not result.is_error, "memory_append", result)

        with anyio.fail_after(180):
            if client.protocol_version >= "2026-07-28":
                async with client.listen(resource_subscriptions=[uri]) as subscription:
                    check(uri in (subscription.honored.resource_subscriptions or []), "memory honored", subscription.honored)
                    await remember()
                    async for event in subscription:
                        if getattr(event, "uri", None) == uri:
                            break
            else:
                await client.subscribe_resource(uri)
                await remember()
                await updated.setdefault(uri, anyio.Event()).wait()
        read = await client.read_resource(uri)
        compact = json.loads(read.contents[0].text)
        check(compact["level1"]["last_ordinal"] == 0, "compact memory after the update", compact)
        summary["memory_updated"] = True
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        check(uri in resources, "the memory resource is listed", resources)

    if http is not None:
        await http.aclose()
    print(json.dumps(summary))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], required=True)
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--engram")
    parser.add_argument("--data-dir")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--plugins", required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--collection", required=True)
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
