"""The flow author's commands: `ivr flows check|test|graph`, `ivr chat`,
`ivr db seed|purge|recover`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ivr.config import Settings, is_database_url
from ivr.errors import ConfigError, FlowError
from ivr.flows.library import FlowLibrary
from ivr.flows.load import check_paths, load_flow
from ivr.flows.mermaid import mermaid
from ivr.flows.model import Flow

if TYPE_CHECKING:
    from ivr.dialog.agent_step import ModelFor
    from ivr.dialog.conversation import TextConversation


def main(args: argparse.Namespace) -> int:
    from ivr.logging import configure

    configure("warning", json=False)
    if args.command == "db":
        commands = {"purge": _purge, "recover": _recover, "seed": _seed}
        return commands[args.db_command](args)
    if args.command == "chat":
        return asyncio.run(_chat(args))
    if args.flows_command == "check":
        return _check(args.paths)
    if args.flows_command == "test":
        return asyncio.run(_test(args))
    return _graph(args)


def _known_tools() -> set[str]:
    from ivr.tools.registry import default_registry
    from ivr.tools.webhooks import load_webhooks

    s = Settings.from_env()
    path = s.tools_file if s.tools_file is not None else s.flows.parent / "tools.yaml"
    webhooks = {spec.name for spec in load_webhooks(path, missing_ok=s.tools_file is None)}
    return set(default_registry(Path(":memory:")).names()) | webhooks


def _check(paths: list[Path]) -> int:
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    files = [f for f in files if f.name != "routes.yaml"]
    issues = check_paths(files, _known_tools())
    for issue in issues:
        print(issue)
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = len(issues) - errors
    print(f"{len(files)} flow file(s): {errors} error(s), {warnings} warning(s)",
          file=sys.stderr)
    return 1 if errors else 0


def _flows(directory: Path) -> dict[str, Flow]:
    library = FlowLibrary(directory, default="")
    library.load()
    return library.flows


async def _test(args: argparse.Namespace) -> int:
    from ivr.dialog.flowtest import load_spec, run_file

    files = args.files or sorted((args.flows / "tests").glob("*.yaml"))
    if not files:
        print(f"no flow tests found in {args.flows / 'tests'}", file=sys.stderr)
        return 1
    flows = _flows(args.flows)
    passed = failed = 0
    for path in files:
        for outcome in await run_file(path, load_spec(path), flows):
            mark = "PASS" if outcome.ok else "FAIL"
            print(f"{mark} {path}: {outcome.name}")
            if not outcome.ok or args.verbose:
                for line in outcome.transcript:
                    print(f"       {line}")
            for failure in outcome.failures:
                print(f"     - {failure}")
            passed += outcome.ok
            failed += not outcome.ok
    print(f"{passed} passed, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _graph(args: argparse.Namespace) -> int:
    target = Path(args.flow)
    flow = load_flow(target) if target.suffix in (".yaml", ".yml") else _flows(args.flows).get(
        args.flow)
    if flow is None:
        raise FlowError(f"no flow named {args.flow!r} in {args.flows}",
                        hint="give a flow name or a .yaml file")
    text = mermaid(flow)
    if args.output:
        args.output.write_text(text)
    else:
        print(text, end="")
    return 0


def _db_path(given: Path | str | None) -> Path | str:
    return given if given is not None else Settings.from_env().db


def _shown(db: Path | str) -> str:
    """The database for output: a URL's password masked."""
    from ivr.store.backend import describe

    return describe(db)


def _must_exist(db: Path | str) -> None:
    """A SQLite file must be there (a server's URL is checked by connecting to it)."""
    if not is_database_url(db) and not Path(db).exists():
        raise ConfigError(f"{db}: no such database (give --db or set IVR_DB)")


def _seed(args: argparse.Namespace) -> int:
    from ivr.tools.seed import seed

    path = _db_path(args.db)
    counts = asyncio.run(seed(path))
    print(f"seeded {_shown(path)}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _purge(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ivr.store.db import CallStore

    try:
        before = datetime.fromisoformat(args.before.strip())
    except ValueError:
        raise ConfigError(f"--before {args.before!r}: expected an ISO date such as 2026-01-31 "
                          "or a date-time such as 2026-01-31T12:00") from None
    if before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    path = _db_path(args.db)
    _must_exist(path)

    async def purge() -> int:
        store = await CallStore.open(path)
        try:
            return await store.purge_turns(before=before)
        finally:
            await store.close()

    turns = asyncio.run(purge())
    print(f"purged {turns} turn(s) of calls started before {before.isoformat()} "
          f"from {_shown(path)}")
    return 0


def _recover(args: argparse.Namespace) -> int:
    """Replay the spill file into the database. The file is first moved aside (a server
    still running starts a new one); writes that fail again go back into the spill file."""
    import os

    from ivr.store.db import CallStore
    from ivr.store.queue import spill_path

    path = _db_path(args.db)
    _must_exist(path)
    spill = spill_path(path, Settings.from_env(db=path).speech_cache_dir)
    taking = spill.with_name(spill.name + ".recovering")
    if spill.exists():
        # A run that stopped half-way left its file: its writes are replayed first.
        if taking.exists():
            with taking.open("a", encoding="utf-8") as out:
                out.write(spill.read_text(encoding="utf-8"))
            spill.unlink()
        else:
            os.replace(spill, taking)
    if not taking.exists():
        print(f"nothing to recover: no {spill}")
        return 0

    async def replay() -> tuple[int, list[str]]:
        store = await CallStore.open(path)
        try:
            return await store.replay(taking)
        finally:
            await store.close()

    applied, kept = asyncio.run(replay())
    if kept:
        with spill.open("a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in kept))
    taking.unlink()
    print(f"recovered {applied} write(s) into {_shown(path)}"
          + (f"; {len(kept)} kept in {spill} (run again once the database is writable)"
             if kept else ""))
    return 1 if kept else 0


@asynccontextmanager
async def _configured_model(settings: Settings) -> AsyncIterator[ModelFor | None]:
    """The chat model `ivr serve` would use (`IVR_LLM_*`), for as long as the chat lasts;
    None without one (`llm` steps then take their fallback, as on such a server)."""
    if settings.llm is None:
        yield None
        return
    import aiohttp

    from ivr.dialog.agent_step import per_flow_model
    from ivr.llm.client import ChatClient
    from ivr.providers.http import ProviderClient

    async with aiohttp.ClientSession() as http:
        yield per_flow_model(ChatClient(ProviderClient(settings.llm, http), settings.llm.model))


async def _chat(args: argparse.Namespace) -> int:
    from ivr.dialog.conversation import TextConversation
    from ivr.tools.registry import default_registry
    from ivr.tools.seed import seed

    flows = _flows(args.flows)
    if args.flow not in flows:
        raise FlowError(f"no flow named {args.flow!r}", hint=f"one of {', '.join(sorted(flows))}")
    settings = Settings.from_env()
    db = args.db if args.db is not None else settings.db
    await seed(db)
    async with _configured_model(settings) as model:
        conv = TextConversation(flows, args.flow, default_registry(db), db_path=db,
                                caller=args.caller, model=model,
                                llm_max_tokens_per_call=settings.llm_max_tokens_per_call)
        llm = f"llm steps talk to {settings.llm.name}" if settings.llm else "no LLM configured"
        print(f"chatting with flow {args.flow!r} ({llm}): type what the caller says, "
              "#12 presses keys, an empty line is silence, Ctrl-D hangs up")
        try:
            return await _converse(conv)
        finally:
            await conv.close()


async def _converse(conv: TextConversation) -> int:
    ex = await conv.start()
    loop = asyncio.get_running_loop()
    while True:
        for line in ex.bot:
            print(f"bot> {line}")
        for tool, tool_args, ok in ex.tools:
            print(f"     [{tool}({tool_args}) -> {'ok' if ok else 'failed'}]")
        if ex.ended:
            print(f"     [{ex.ended}]")
        if conv.done:
            return 0
        try:
            text = await loop.run_in_executor(None, lambda: input("you> "))
        except EOFError:
            return 0
        ex = await conv.turn(text)
