"""The `ipbot` command: ask, chat, run the bots, build the index, validate, evaluate, benchmark.

Errors are printed as one line for the person at the terminal; `--debug` adds the traceback.
Progress of long work goes to stderr so that `--json` output on stdout stays clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from bot import logs, redact
from bot.settings import (
    Settings,
    SettingsError,
    UnknownSetting,
    load_settings,
    unknown_settings,
)
from bot.store import StoreError
from retrieval.corpus import CorpusError, check_corpus, corpus_version, stale_passages
from retrieval.embedder import ModelNotFoundError
from retrieval.search import UserInputError

if TYPE_CHECKING:
    from bot.moderation import Moderation

log = logging.getLogger("ipbot")
T = TypeVar("T")


def progress(message: str) -> None:
    """Progress for the person at the terminal; a log record when logs are JSON (a service)."""
    if logs.json_enabled():
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def package_version() -> str:
    try:
        return version("ipbot")
    except PackageNotFoundError:
        return "0+unknown"


def version_line(settings: Settings) -> str:
    """Version of the code and of the corpus, and when the index was built; no model load."""
    from retrieval.index import IndexStore

    indexed = IndexStore(settings.data_dir).built_at() or "not yet indexed"
    version = corpus_version(settings.corpus_dir)
    return f"ipbot {package_version()}, corpus {version}, indexed {indexed}"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments get one line naming the problem and where help is, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ipbot",
        description="Answers questions on managing IP in research with cited passages of the "
        "EU Code of Practice (Recommendation (EU) 2023/499).",
    )
    parser.add_argument("--version", action="store_true", help="show versions and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer a question ('-' reads one per line from stdin)")
    ask.add_argument("question", help="the question, or '-' for one question per stdin line")
    ask.add_argument("--area", help="only search this area (slug)")
    ask.add_argument("--top-k", type=int, default=None, help="number of passages (default 3)")
    ask.add_argument("--json", action="store_true", help="print JSON (one object per question)")

    commands.add_parser("chat", help="chat in this terminal")
    commands.add_parser("run", help="start the bots whose tokens are set (else the console)")
    index = commands.add_parser("index", help="manage the search index")
    index.add_argument("action", choices=["build"], help="build: bring the index up to date")
    corpus = commands.add_parser("corpus", help="check the corpus, refresh the running bot")
    corpus.add_argument(
        "action",
        choices=["validate", "reload", "versions", "promote", "rollback"],
        help="validate: list every problem; reload: have the running bot check and load the "
        "corpus; versions: list kept versions; promote N: serve version N; rollback: return "
        "to the previous version",
    )
    corpus.add_argument("version", nargs="?", default="", help="for promote: the version number")
    corpus.add_argument(
        "--wait", type=float, default=900.0, help="seconds to wait for the outcome (default 900)"
    )
    evaluate = commands.add_parser("eval", help="measure retrieval quality on an eval set")
    evaluate.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="eval YAML (default tests/data/eval.yaml); with --translated one or more files, "
        "calibrated together",
    )
    evaluate.add_argument(
        "--calibrate", action="store_true", help="also search abstention thresholds"
    )
    evaluate.add_argument(
        "--translated",
        action="store_true",
        help="questions in other languages, per language (default tests/data/eval_translated.yaml)",
    )
    gaps = commands.add_parser("gaps", help="what people asked that the corpus could not answer")
    gaps.add_argument("action", choices=["export"], help="export: one row per question")
    gaps.add_argument("--csv", action="store_true", required=True, help="as CSV on stdout")
    gaps.add_argument("--days", type=int, default=30, help="how far back (default 30)")
    report = commands.add_parser("report", help="a web page of usage figures, charts and gaps")
    report.add_argument("--html", type=Path, required=True, metavar="FILE", help="write it here")
    report.add_argument("--days", type=int, default=30, help="how far back (default 30)")
    commands.add_parser(
        "doctor", help="check settings, tokens, database and index; exit 1 if not ready"
    )
    db = commands.add_parser("db", help="manage the database")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply migrations")
    updates = commands.add_parser("updates", help="dissemination updates (corpus/updates/)")
    updates_actions = updates.add_subparsers(dest="action", metavar="ACTION", required=True)
    updates_actions.add_parser("list", help="every update, and whether it was published")
    publish = updates_actions.add_parser("publish", help="queue an update for its subscribers")
    publish.add_argument("update", help="the update's file (path or name) under corpus/updates/")
    status = updates_actions.add_parser("status", help="delivery figures of a published update")
    status.add_argument("update", help="the update's id (its file name)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    resend = updates_actions.add_parser(
        "resend", help="queue an update's uncertain deliveries again (may duplicate)"
    )
    resend.add_argument("update", help="the update's id (its file name)")
    bench = commands.add_parser("bench", help="measure speed and memory")
    bench.add_argument("--questions", type=int, default=200, help="warm questions to time")
    bench.add_argument(
        "--passages",
        type=int,
        help="instead: ranking cost on a synthetic corpus of this many passages (e.g. 100000)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.DEBUG if args.debug else logging.WARNING)
    try:
        return dispatch(args, configured_settings(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ipbot ask ... | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # as a shell reports a command ended by SIGPIPE
    except (SettingsError, ModelNotFoundError, UserInputError, StoreError) as exc:
        return fail(str(exc), args.debug, code=2)
    except CorpusError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return fail(
            f"the corpus has {len(exc.problems)} problem(s); run 'ipbot corpus validate'",
            args.debug,
        )
    except Exception as exc:  # the last line of defence: one clear line, no traceback
        return fail(f"{type(exc).__name__}: {exc}", args.debug)


def configured_settings(args: argparse.Namespace) -> Settings:
    """Settings, the secrets to redact, logging in its final form, and a warning for each
    IPBOT_ name no setting reads: a typo that would otherwise be ignored without a word.

    The warnings come before an invalid setting's error too (a misspelt name is a likely cause);
    `ipbot doctor` lists them among its problems instead.
    """
    unknown = unknown_settings()
    try:
        settings = load_settings()
    except SettingsError:
        warn_of(unknown)
        raise
    redact.install(redact.settings_secrets(settings))
    if args.command == "run":  # the service: its level and form (JSON for a collector)
        logs.configure("DEBUG" if args.debug else settings.log_level, settings.log_format)
    if args.command != "doctor":
        warn_of(unknown)
    return settings


def warn_of(unknown: list[UnknownSetting]) -> None:
    for setting in unknown:
        log.warning("%s", setting)


def fail(message: str, debug: bool, code: int = 1) -> int:
    if debug:
        log.exception(message)
    line = f"ipbot: error: {redact.redact(message)}"
    if logs.json_enabled():
        log.error(line)
    else:
        print(line, file=sys.stderr)
    return code


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.version:
        print(version_line(settings))
        return 0
    handlers = {
        "ask": cmd_ask,
        "chat": cmd_chat,
        "run": cmd_run,
        "index": cmd_index,
        "corpus": cmd_corpus,
        "eval": cmd_eval,
        "bench": cmd_bench,
        "db": cmd_db,
        "doctor": cmd_doctor,
        "gaps": cmd_gaps,
        "report": cmd_report,
        "updates": cmd_updates,
    }
    if args.command is None:
        build_parser().print_help()
        return 2
    return handlers[args.command](args, settings)


def cmd_corpus(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "validate":
        return validate_corpus(settings)
    return asyncio.run(request_refresh(args, settings))


PICKUP_SECONDS = 30.0  # a running bot polls every 2 s; longer means none is running


async def request_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Ask the running bot, through the database, to reload, promote or roll back."""
    from bot.refresh import versions_text, wait_for_request
    from bot.store import open_store

    store = await open_store(settings.database)
    try:
        if args.action == "versions":
            print(await versions_text(store, limit=20))
            return 0
        if args.action == "promote" and not args.version.isdigit():
            raise UserInputError("say which version: ipbot corpus promote N (see: versions)")
        number = await store.request_refresh(args.action, args.version, "cli")
        progress(f"Asked the running bot to {args.action}; waiting for it...")
        request = await wait_for_request(store, number, args.wait, pickup=PICKUP_SECONDS)
    finally:
        await store.close()
    if request.status == "withdrawn":
        raise UserInputError(
            "no running ipbot took the request within "
            f"{PICKUP_SECONDS:.0f} s; start `ipbot run` with this database and try again"
        )
    if request.status not in ("done", "failed"):
        print("Still working; see `ipbot corpus versions` later.", file=sys.stderr)
        return 1
    print(request.result)
    return 0 if request.status == "done" else 1


def validate_corpus(settings: Settings) -> int:
    corpus, problems = check_corpus(settings.corpus_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found.", file=sys.stderr)
        return 1
    kinds = {
        k: sum(p.kind == k for p in corpus.passages)
        for k in ("recommendation", "example", "definition")
    }
    counts = ", ".join(f"{n} {k}s" for k, n in kinds.items())
    for warning in stale_passages(corpus, settings.stale_after_days):
        print(f"{warning} (warning)")
    print(
        f"Corpus OK: {len(corpus.areas)} areas, {len(corpus.passages)} passages ({counts}), "
        f"{len(corpus.updates)} updates."
    )
    return 0


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from retrieval.corpus import load_corpus
    from retrieval.embedder import Embedder
    from retrieval.index import IndexStore

    corpus = load_corpus(settings.corpus_dir)
    progress(f"Loading the embedding model ({settings.model})...")
    embedder = Embedder(settings.model, cache_dir=settings.data_dir / "models", int8=settings.int8)
    store = IndexStore(settings.data_dir, settings.index_type)
    store.build(corpus, embedder, progress, snapshot_of=settings.corpus_dir)
    if settings.multilingual:
        from retrieval.multilingual import open_multilingual

        open_multilingual(settings.data_dir, corpus, progress)
    return 0


def _questions(question: str) -> Iterable[str]:
    if question != "-":
        yield question
        return
    for line in sys.stdin:
        yield line.rstrip("\n")


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.console import format_answer
    from bot.replies import DISCLAIMER

    if args.question != "-" and not args.question.strip():
        raise UserInputError(
            'Please type a question, for example: ipbot ask "Who owns joint results?"'
        )
    top_k = settings.top_k if args.top_k is None else args.top_k
    if not 1 <= top_k <= 50:
        raise UserInputError("--top-k must be between 1 and 50")
    from bot.assistant import configured_retriever

    retriever = configured_retriever(settings, progress)
    if args.area:
        retriever.resolve_area(args.area)  # fail once, early, on a bad area
    for question in _questions(args.question):
        try:
            answer = retriever.answer(question, args.area, top_k)
        except UserInputError as exc:
            if args.json:
                print(json.dumps(_empty_result(question, str(exc))), flush=True)
            else:
                print(exc)
            continue
        if args.json:
            print(json.dumps(answer.to_json(), ensure_ascii=False), flush=True)
        else:
            print(format_answer(answer, DISCLAIMER, sys.stdout.isatty(), in_chat=False) + "\n")
    return 0


def _empty_result(question: str, error: str) -> dict:
    return {"question": question, "answered": False, "area": None, "results": [], "error": error}


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from bot.app import close_app, open_app, running_sender
    from bot.console import run_console

    async def chat() -> None:
        app = await open_app(settings, progress)
        try:
            async with running_sender(app):
                await run_console(app.assistant)
        finally:
            await close_app(app)

    asyncio.run(chat())
    return 0


def with_moderation(settings: Settings, work: Callable[[Moderation], Awaitable[T]]) -> T:
    """Open ipbot as `run` would (store, model, index), do the moderators' work, close it."""
    from bot.app import close_app, open_app

    async def run() -> T:
        app = await open_app(settings, progress)
        try:
            return await work(app.assistant.moderation)
        finally:
            await close_app(app)

    return asyncio.run(run())


def _check_days(days: int) -> None:
    from bot.moderation import MAX_DAYS

    if not 1 <= days <= MAX_DAYS:
        raise UserInputError(f"--days must be between 1 and {MAX_DAYS}")


def cmd_gaps(args: argparse.Namespace, settings: Settings) -> int:
    _check_days(args.days)
    sys.stdout.write(with_moderation(settings, lambda m: m.gaps_csv(args.days)))
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from bot.report import check_destination, gather_report, write_report

    _check_days(args.days)
    check_destination(args.html)
    report = with_moderation(settings, lambda m: gather_report(m, args.days))
    write_report(report, args.html)
    progress(f"Report of the last {args.days} days written to {args.html}")
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from bot.store import open_store

    async def upgrade() -> str | None:
        store = await open_store(settings.database)
        try:
            return await store.check_revision()
        finally:
            await store.close()

    print(f"Database schema is up to date (revision {asyncio.run(upgrade())}).")
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bot.doctor import diagnose, report

    text, code = report(asyncio.run(diagnose(settings, unknown_settings())))
    print(redact.redact(text))
    return code


def cmd_updates(args: argparse.Namespace, settings: Settings) -> int:
    """Publishing works beside a running bot: it only writes the outbox, the bot delivers."""
    from bot.store import open_store
    from bot.subscriptions import publish_update, update_items
    from retrieval.corpus import load_corpus

    corpus = load_corpus(settings.corpus_dir)
    items = update_items(corpus)

    def find(name: str):  # type: ignore[no-untyped-def]
        key = Path(name).name.removesuffix(".md")
        if key not in items:
            raise UserInputError(
                f"no update '{key}' in {settings.corpus_dir / 'updates'}; see 'ipbot updates list'"
            )
        return items[key]

    async def run() -> int:
        store = await open_store(settings.database)
        try:
            if args.action == "list":
                for item in sorted(items.values(), key=lambda i: (i.date, i.id)):
                    state = "published" if await store.is_published(item.id) else "not published"
                    print(f"{item.id}  {state}  {item.title}")
                return 0
            if args.action == "publish":
                item = find(args.update)
                feeds = (settings.data_dir / "feeds", corpus) if settings.feeds else None
                queued = await publish_update(store, item, "cli", feeds)
                if queued is None:
                    print(f"{item.id} was already published; nothing changed.", file=sys.stderr)
                else:
                    print(
                        f"Queued for {queued} chats; a running ipbot delivers it.", file=sys.stderr
                    )
                print(item.id)
                return 0
            update_id = Path(args.update).name.removesuffix(".md")  # a path or a file name
            if args.action == "resend":
                count = await store.resend_uncertain(update_id)
                await store.audit("cli", "resend", update_id, f"{count} requeued")
                print(f"{count} uncertain deliveries queued again.")
                return 0
            status = await store.status(update_id)
            if status is None:
                raise UserInputError(f"'{args.update}' has not been published")
            if args.json:
                print(json.dumps(status.to_json()))
            else:
                print(", ".join(f"{k} {v}" for k, v in status.to_json().items()))
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.runner import run_bots

    return run_bots(settings, progress)


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from bot.assistant import configured_retriever
    from retrieval.evaluate import DEFAULT_EVAL_FILE, evaluate, format_report

    retriever = configured_retriever(settings, progress)
    if args.translated:
        return _eval_translated(retriever, args.files, args.calibrate)
    if len(args.files) > 1:
        raise UserInputError("give one eval file (several only with --translated)")
    file = args.files[0] if args.files else DEFAULT_EVAL_FILE
    report = evaluate(retriever, file, calibrate=args.calibrate)
    print(format_report(report))
    return 0


def _eval_translated(retriever, files: list[Path], calibrate: bool) -> int:
    from retrieval.evaluate import (
        TRANSLATED_EVAL_FILE,
        calibrate_translated,
        evaluate_languages,
        format_language_reports,
    )

    if retriever.multilingual is None:
        raise UserInputError("the multilingual path is off (IPBOT_MULTILINGUAL=false)")
    reports = evaluate_languages(retriever, *(files or [TRANSLATED_EVAL_FILE]))
    thresholds = calibrate_translated(reports) if calibrate else None
    print(format_language_reports(reports, thresholds))
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bot.benchmark import run_benchmark
    from bot.scale import run_scale_benchmark

    if args.passages:
        print(run_scale_benchmark(settings, args.passages, args.questions, progress))
    else:
        print(run_benchmark(settings, questions=args.questions, progress=progress))
    return 0


if __name__ == "__main__":
    sys.exit(main())
