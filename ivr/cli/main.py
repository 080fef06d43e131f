"""The `ivr` command: serve, call (simulated caller), demo, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from ivr.config import Settings, database_url, env_var
from ivr.errors import IvrError

_DB_HELP = "SQLite file or postgresql:// URL (default: IVR_DB or ./ivr.db)"
_TRANSCRIBE_HELP = ("also print a recognizer check: the caller's own pocketsphinx "
                    "transcription of each stretch of bot audio it heard (what the bot said "
                    "is the server's prompt text, printed anyway)")


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the Twilio webhook + media stream server")
    p.add_argument("--host", help=f"bind address (env {env_var('host')}, default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"TCP port (env {env_var('port')}, default 8080)")
    p.add_argument("--db", type=database_url,
                   help=f"SQLite file or postgresql:// URL (env {env_var('db')}, default ivr.db)")
    p.add_argument("--flows", type=Path, help=f"flows directory (env {env_var('flows')})")
    p.add_argument("--default-flow",
                   help=f"flow when none is given (env {env_var('default_flow')})")
    p.add_argument("--public-url", help=f"URL Twilio reaches us at (env {env_var('public_url')})")
    p.add_argument("--recognizer-workers", type=int,
                   help=f"recognition worker processes (env {env_var('recognizer_workers')})")
    p.add_argument("--processes", type=int,
                   help="server processes on one port under a supervisor that restarts "
                        f"them (env {env_var('processes')}, default 1)")
    p.add_argument("--voice", help=f"espeak-ng voice (env {env_var('voice')}, default en-us)")
    p.add_argument("--voice-rate", type=int, help=f"words per minute (env {env_var('voice_rate')})")
    p.add_argument("--log-level", help=f"debug|info|warning (env {env_var('log_level')})")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="start on a public address without TWILIO_AUTH_TOKEN, IVR_PUBLIC_URL "
                        f"or IVR_TRUST_PROXY: a test bench only (env {env_var('insecure')})")


def _call_parser(sub: Any) -> None:
    p = sub.add_parser("call", help="place a simulated Twilio call against a running server")
    p.add_argument("--url", required=True,
                   help="the server, http://HOST:PORT (or its ws://HOST:PORT/media URL): the "
                        "caller posts /voice there, then opens the stream it answers")
    p.add_argument("--flow", help="flow to run (posted as /voice?flow=NAME)")
    p.add_argument("--say", action="append", dest="actions", type=lambda t: ("say", t),
                   metavar="TEXT", help="speak TEXT at the next prompt (repeatable)")
    p.add_argument("--dtmf", action="append", dest="actions", type=lambda d: ("dtmf", d),
                   metavar="DIGITS", help="press DIGITS at the next prompt (repeatable)")
    p.add_argument("--voice", default="en-us", help="the caller's espeak-ng voice")
    p.add_argument("--from", dest="from_number", default="+15550100001")
    p.add_argument("--to", dest="to_number", default="+15550100002")
    p.add_argument("--transcribe", action=argparse.BooleanOptionalAction, default=False,
                   help=_TRANSCRIBE_HELP)
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN") or None,
                   help="sign /voice and the stream as Twilio does (env TWILIO_AUTH_TOKEN)")
    p.add_argument("--public-url", default=os.environ.get("IVR_PUBLIC_URL") or None,
                   help="the https:// URL the server knows itself by, which signatures "
                        "cover (env IVR_PUBLIC_URL; default: --url)")


def _authoring_parsers(sub: Any) -> None:
    flows = sub.add_parser("flows", help="check, test and draw call flows")
    fsub = flows.add_subparsers(dest="flows_command", required=True)
    check = fsub.add_parser("check", help="lint flow files; exit 1 on any error")
    check.add_argument("paths", nargs="+", type=Path)
    test = fsub.add_parser("test", help="run YAML conversation tests (see ivr/flowtest.py)")
    test.add_argument("files", nargs="*", type=Path,
                      help="test files (default: flows/tests/*.yaml)")
    test.add_argument("--flows", type=Path, default=Path("flows"))
    test.add_argument("-v", "--verbose", action="store_true", help="print each transcript")
    graph = fsub.add_parser("graph", help="write a flow as a Mermaid diagram")
    graph.add_argument("flow", help="flow name or file")
    graph.add_argument("--flows", type=Path, default=Path("flows"))
    graph.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    chat = sub.add_parser("chat", help="talk to a flow in the terminal (#12 presses keys)")
    chat.add_argument("flow")
    chat.add_argument("--flows", type=Path, default=Path("flows"))
    chat.add_argument("--db", type=database_url,
                      help="SQLite file or postgresql:// URL for the tools (default: IVR_DB)")
    chat.add_argument("--caller", default="+15550100001",
                      help="the verified caller's number, the one the tools act for "
                           "(\"\": an anonymous caller)")
    db = sub.add_parser("db", help="database utilities")
    dsub = db.add_subparsers(dest="db_command", required=True)
    seed = dsub.add_parser("seed", help="create the schema and insert the demo data")
    seed.add_argument("--db", type=database_url, help=_DB_HELP)
    purge = dsub.add_parser(
        "purge", help="delete the transcripts (turns) of calls started before a date; "
        "call rows and costs stay")
    purge.add_argument("--before", required=True, metavar="DATE",
                       help="ISO date or date-time, UTC unless it names a zone (2026-01-31)")
    purge.add_argument("--db", type=database_url, help=_DB_HELP)
    recover = dsub.add_parser(
        "recover", help="replay the call writes the server spilled (<db>.spill.jsonl) "
        "when the database refused them; safe to run twice")
    recover.add_argument("--db", type=database_url, help=_DB_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _call_parser(sub)
    demo_p = sub.add_parser("demo", help="start a server, place a voice call and a keypad "
                            "call, stop")
    demo_p.add_argument("--transcribe", action="store_true", help=_TRANSCRIBE_HELP)
    _authoring_parsers(sub)
    report = sub.add_parser("report", help="calls, outcomes, cost and latency from the database")
    report.add_argument("--db", type=database_url, help=_DB_HELP)
    report.add_argument("--since", help="ISO date/time, or an age like 7d or 12h")
    report.add_argument("--flow", help="only calls of this flow")
    report.add_argument("--project-monthly", type=int, metavar="N",
                        help="also project the monthly cost of N calls a month like these, "
                             "by provider, with the pricing table's volume tiers")
    fmt = report.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable JSON")
    fmt.add_argument("--csv", action="store_true", help="one row per metric")
    bench = sub.add_parser("bench", help="measurements")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    acc = bench_sub.add_parser("accuracy", help="recognizer accuracy on the demo flow's answers")
    acc.add_argument("--voices", default="en-us,en-gb", help="comma-separated espeak voices")
    acc.add_argument("--flow", default="flows/demo.yaml")
    acc.add_argument("--repeat", type=int, default=1,
                     help="synthesize each answer this many times (espeak varies slightly)")
    acc.add_argument("--phrasings", choices=("flow", "people"), default="flow",
                     help="the flow's own words, or answers as people say them (carrier "
                          "words, out-of-grammar answers; for flows/dental_booking.yaml)")
    acc.add_argument("--expect", choices=("on", "off"), default="on",
                     help="steps with expect listen for the offered values only (on), or "
                          "for any value (off: the same answers, the slot's whole grammar)")
    load = bench_sub.add_parser("load", help="N concurrent calls against a server process")
    load.add_argument("--calls", type=int, default=100)
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--workers", type=int, default=1, help="server recognizer workers")
    load.add_argument("--baseline", action="store_true",
                      help="then the same load against a minimal in-repo pacing server "
                           "(ivr/bench/baseline.py), and the CPU ratio")
    load.add_argument("--json", type=Path, default=None, metavar="PATH",
                      help="also write the figures to PATH as JSON")
    load.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                      help="the load generator's event loop (auto: uvloop where installed)")
    slots = bench_sub.add_parser(
        "slots", help="slot answers (dates, times, digits, ...) through the phone path")
    slots.add_argument("--voices", default="en-us,en-gb,en-us+m3,en-us+f3",
                       help="comma-separated espeak voices")
    slots.add_argument("--workers", type=int, default=2, help="recognizer workers")
    rec = bench_sub.add_parser(
        "recognizer", help="event-loop lag while decoding; result latency after speech")
    rec.add_argument("--workers", type=int, default=2, help="recognizer workers")
    rec.add_argument("--utterances", type=int, default=4, help="decoded at the same time")
    rec.add_argument("--no-sched-idle", dest="sched_idle", action="store_false",
                     help="workers at nice 10 only, without SCHED_IDLE")
    rec.add_argument("--rate", type=float, default=0.0,
                     help="instead: this many callers per second answer a menu, in real "
                          "time; prints utterances per CPU-second and result latency")
    rec.add_argument("--seconds", type=float, default=10.0, help="with --rate: how long")
    rec.add_argument("--slots", type=int, default=None,
                     help="with --rate: utterances per worker (env IVR_RECOGNIZER_SLOTS; "
                          "1: one at a time, as before)")
    lat = bench_sub.add_parser(
        "latency", help="voice-to-voice and barge-in latency of spoken answers to the "
                        "shipped flows, through a server process")
    lat.add_argument("--voices", default="en-us,en-gb,en-us+m3,en-us+f3",
                     help="comma-separated espeak voices")
    lat.add_argument("--concurrency", type=int, default=2, help="calls live at once")
    lat.add_argument("--workers", type=int, default=2, help="server recognizer workers")
    lat.add_argument("--complete-ms", type=int, default=None,
                     help="IVR_ENDPOINT_COMPLETE_MS for the server (0: grammar-aware "
                          "endpointing off, the baseline); default: the server's default")
    lat.add_argument("--barge-in", choices=("vad", "words"), default=None,
                     help="IVR_BARGE_IN for the server (words: only speech that is "
                          "believably a word cuts a prompt); default: the server's default")
    lat.add_argument("--keep", type=Path, default=None, metavar="DIR",
                     help="run in DIR and keep it: the server's debug log (server.log: "
                          "partial hypotheses, end-of-speech decisions; it holds what the "
                          "callers said) and its database")
    _bench_fault_parsers(bench_sub)
    _bench_conversation_parser(bench_sub)
    return parser


def _bench_conversation_parser(bench_sub: Any) -> None:
    conv = bench_sub.add_parser(
        "conversation", help="callers with goals (book, cancel, order status) through the "
                             "shipped flows and a server process, judged by the database")
    conv.add_argument("--calls", type=int, default=100, help="voice calls")
    conv.add_argument("--concurrency", type=int, default=6, help="calls live at once")
    conv.add_argument("--voices", default=None,
                      help="comma-separated espeak voices (default: the 6 of "
                           "ivr/bench/conversation.py, 2 of them held out)")
    conv.add_argument("--keypad", type=int, default=2, help="keypad calls per goal")
    conv.add_argument("--workers", type=int, default=2, help="server recognizer workers")
    conv.add_argument("--json", type=Path, default=None, metavar="PATH",
                      help="write every call's result there")


def _bench_fault_parsers(bench_sub: Any) -> None:
    soak = bench_sub.add_parser(
        "soak", help="many short calls through a server process: memory, fds, tasks, "
                     "threads before and after; records without an outcome")
    soak.add_argument("--calls", type=int, default=5000, help="measured calls")
    soak.add_argument("--concurrency", type=int, default=50, help="calls live at once")
    soak.add_argument("--warmup", type=int,
                      help="calls before the baseline (default: a tenth, at most 200)")
    soak.add_argument("--workers", type=int, default=1, help="server recognizer workers")
    procs = bench_sub.add_parser(
        "processes", help="short calls through `ivr serve --processes N`: calls per "
                          "process from /metrics and the store; --kill: one killed mid-run")
    procs.add_argument("--calls", type=int, default=200)
    procs.add_argument("--concurrency", type=int, default=20, help="calls live at once")
    procs.add_argument("--processes", type=int, default=2, help="server processes")
    procs.add_argument("--kill", action="store_true",
                       help="kill -9 one server process halfway through")
    chaos = bench_sub.add_parser(
        "chaos", help="faults against a server process (worker killed, provider hung and "
                      "flapping, SIGTERM, kill -9 and restart); every call's outcome")
    chaos.add_argument("--calls", type=int, default=3, help="calls live during each fault")
    chaos.add_argument("--drain", type=float, default=8.0,
                       help="IVR_DRAIN_S for the server (seconds)")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
        elif args.command == "call":
            sys.exit(asyncio.run(_call(args)))
        elif args.command == "demo":
            sys.exit(asyncio.run(demo(transcribe=args.transcribe)))
        elif args.command == "report":
            from ivr.analytics.report import main as report_main

            if args.db is None:
                args.db = Settings.from_env().db
            sys.exit(report_main(args))
        elif args.command in ("flows", "chat", "db"):
            from ivr.cli import authoring

            sys.exit(authoring.main(args))
        elif args.command == "bench" and args.bench == "load":
            from ivr.server.loop import run

            sys.exit(run(_bench(args), args.loop))  # a cheap generator: uvloop
        elif args.command == "bench":
            sys.exit(asyncio.run(_bench(args)))
    except IvrError as exc:
        sys.exit(f"ivr: {exc}")


async def _bench(args: argparse.Namespace) -> int:
    if args.bench == "load":
        from ivr.bench.load import load_main

        return await load_main(args.calls, args.seconds, args.workers, args.baseline,
                               json_path=args.json)
    if args.bench == "soak":
        from ivr.bench.soak import soak_main

        return await soak_main(args.calls, args.concurrency, warmup=args.warmup,
                               workers=args.workers)
    if args.bench == "processes":
        from ivr.bench.processes import processes_main

        return await processes_main(args.calls, args.concurrency, args.processes,
                                    kill=args.kill)
    if args.bench == "chaos":
        from ivr.bench.chaos import chaos_main

        return await chaos_main(calls=args.calls, drain_s=args.drain)
    if args.bench == "slots":
        from ivr.bench.slots import slots_main

        return await slots_main(args.voices.split(","), workers=args.workers)
    if args.bench == "recognizer" and args.rate > 0:
        from ivr.bench.answer_rate import answer_rate_main

        return await answer_rate_main(args.rate, args.seconds, workers=args.workers,
                                      slots=args.slots, sched_idle=args.sched_idle)
    if args.bench == "recognizer":
        from ivr.bench.recognizer import recognizer_main

        return await recognizer_main(args.workers, args.utterances, sched_idle=args.sched_idle)
    if args.bench == "latency":
        from ivr.bench.latency import latency_main

        return await latency_main(args.voices.split(","), concurrency=args.concurrency,
                                  workers=args.workers, complete_ms=args.complete_ms,
                                  barge_in_mode=args.barge_in, keep=args.keep)
    if args.bench == "conversation":
        from ivr.bench.conversation import VOICES, conversation_main

        voices = tuple(args.voices.split(",")) if args.voices else VOICES
        return await conversation_main(args.calls, args.concurrency, voices,
                                       keypad_per_goal=args.keypad, json_path=args.json,
                                       workers=args.workers)
    from ivr.bench.accuracy import accuracy_main

    return await accuracy_main(args.flow, args.voices.split(","), repeat=args.repeat,
                               phrasings=args.phrasings, expect=args.expect == "on")


def serve(args: argparse.Namespace) -> None:
    import structlog

    from ivr.logging import configure
    from ivr.server.access import startup_refusal
    from ivr.server.app import create_app

    settings = Settings.from_env(
        host=args.host, port=args.port, db=args.db, flows=args.flows,
        default_flow=args.default_flow, public_url=args.public_url,
        recognizer_workers=args.recognizer_workers, voice=args.voice,
        voice_rate=args.voice_rate, log_level=args.log_level, insecure=args.insecure,
        processes=args.processes,
    )
    refusal = startup_refusal(settings)
    if refusal is not None:
        print(f"ivr: {refusal}", file=sys.stderr)
        sys.exit(2)
    configure(settings.log_level, redact_digits=settings.redact_digits)
    if settings.processes > 1:
        sys.exit(_supervise(args, settings))
    if settings.insecure:
        structlog.get_logger("ivr.serve").warning(
            "insecure", detail="IVR_INSECURE / --insecure: started without the checks that "
                               "keep strangers from starting calls; a test bench only")
    from ivr.server.lifecycle import serve as serve_app
    from ivr.server.loop import run

    # Not web.run_app: its signal handling cancels live calls; ours drains them first.
    from ivr.server.supervisor import child_ready_notifier

    ready = child_ready_notifier()  # set: one of `--processes N`, sharing the port
    run(serve_app(create_app(settings), settings.host, settings.port,
                  print=lambda m: print(m, file=sys.stderr),
                  reuse_port=ready is not None, ready=ready), settings.event_loop)


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """`ivr serve --processes N` (N > 1): the children are this command with the same
    flags and `--processes 1`, under `server.supervisor`."""
    import secrets

    from ivr.config import config_file_env
    from ivr.server.supervisor import Supervisor, workers_per_process

    command = [sys.executable, "-m", "ivr", "serve", "--processes", "1"]
    for name, value in vars(args).items():
        if name in ("command", "processes") or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    env: dict[str, str] = {}
    if not (settings.stream_secret or settings.twilio_auth_token):
        env["IVR_STREAM_SECRET"] = secrets.token_hex(32)  # one for all: see the module
    given = dict(os.environ)
    if given.get("IVR_CONFIG"):
        given = {**config_file_env(Path(given["IVR_CONFIG"]), given), **given}
    if args.recognizer_workers is None and not given.get(env_var("recognizer_workers")):
        env[env_var("recognizer_workers")] = str(workers_per_process(settings.processes))
    return Supervisor(command, env, settings.processes,
                      instance_id=settings.instance_id).run()


async def _call(args: argparse.Namespace) -> int:
    from ivr.sim.run import run_call
    from ivr.sim.script import PressKeys, Say
    from ivr.sim.transcript import format_transcript

    actions = [Say(v) if k == "say" else PressKeys(v) for k, v in (args.actions or [])]
    transcript = await run_call(
        args.url, actions, flow=args.flow, voice=args.voice,
        from_number=args.from_number, to_number=args.to_number,
        transcribe=args.transcribe, auth_token=args.auth_token,
        public_url=args.public_url, api_token=os.environ.get("IVR_API_TOKEN") or None,
    )
    print(format_transcript(transcript))
    return 0


async def demo(*, transcribe: bool = False) -> int:
    """Start the server on a free loopback port, place two calls, print them, stop.

    The server seeds its new database itself (`demo_seeded`), as `ivr serve` does."""
    import tempfile

    from ivr.logging import configure
    from ivr.server.app import create_app
    from ivr.sim.run import free_port, run_call
    from ivr.sim.script import CallerAction, PressKeys, Say
    from ivr.sim.transcript import format_transcript

    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(host="127.0.0.1", port=0, db=Path(tmp) / "demo.db")
        async with contextlib.AsyncExitStack() as stack:
            runner = web.AppRunner(create_app(settings))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, settings.host, free_port())
            await site.start()
            url = site.name  # the callers post /voice there, then open the stream it names
            print(f"ivr demo: server on {site.name}, flow {settings.default_flow!r}\n")
            ears = None
            if transcribe:  # one pool checks what both callers heard
                from ivr.speech.sphinx.pool import RecognizerPool

                ears = RecognizerPool(size=1)
                stack.push_async_callback(ears.close)
                await ears.start_workers()
            calls: dict[str, list[CallerAction]] = {
                "by voice: order status": [Say("orders"), Say("one two three four")],
                "by keypad: order status": [PressKeys("2"), PressKeys("4567")],
            }
            results = await asyncio.gather(
                *(run_call(url, actions, transcribe=transcribe, recognizer=ears,
                           auth_token=settings.twilio_auth_token or None,
                           public_url=settings.public_base or None,
                           api_token=settings.api_token or None)
                  for actions in calls.values())
            )
            for title, transcript in zip(calls, results, strict=True):
                print(f"=== call {title} ===")
                print(format_transcript(transcript))
                print()
    return 0


if __name__ == "__main__":
    main()
