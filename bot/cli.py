"""The `ipbot` command: ask, chat, run the bots, build the index, validate, evaluate, benchmark.

Errors are printed as one line for the person at the terminal; `--debug` adds the traceback.
Progress of long work goes to stderr so that `--json` output on stdout stays clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bot.settings import Settings, SettingsError, load_settings
from retrieval.corpus import CorpusError, check_corpus, corpus_version, stale_passages
from retrieval.embedder import ModelNotFoundError
from retrieval.search import UserInputError

log = logging.getLogger("ipbot")


def progress(message: str) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    corpus = commands.add_parser("corpus", help="check the corpus files")
    corpus.add_argument("action", choices=["validate"], help="validate: list every problem")
    evaluate = commands.add_parser("eval", help="measure retrieval quality on an eval set")
    evaluate.add_argument(
        "file", nargs="?", type=Path, help="eval YAML (default tests/data/eval.yaml)"
    )
    evaluate.add_argument(
        "--calibrate", action="store_true", help="also search abstention thresholds"
    )
    bench = commands.add_parser("bench", help="measure speed and memory")
    bench.add_argument("--questions", type=int, default=200, help="warm questions to time")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
        if not args.debug:
            logging.getLogger().setLevel(settings.log_level if args.command == "run" else "WARNING")
        return dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except (SettingsError, ModelNotFoundError, UserInputError) as exc:
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


def fail(message: str, debug: bool, code: int = 1) -> int:
    if debug:
        log.exception(message)
    print(f"ipbot: error: {message}", file=sys.stderr)
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
    }
    if args.command is None:
        build_parser().print_help()
        return 2
    return handlers[args.command](args, settings)


def cmd_corpus(args: argparse.Namespace, settings: Settings) -> int:
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
    embedder = Embedder(settings.model, cache_dir=settings.data_dir / "models")
    IndexStore(settings.data_dir, settings.index_type).build(corpus, embedder, progress)
    return 0


def _questions(question: str) -> Iterable[str]:
    if question != "-":
        yield question
        return
    for line in sys.stdin:
        yield line.rstrip("\n")


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.assistant import DISCLAIMER
    from bot.console import format_answer

    if args.question != "-" and not args.question.strip():
        raise UserInputError(
            'Please type a question, for example: ipbot ask "Who owns joint results?"'
        )
    top_k = args.top_k or settings.top_k
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
            print(format_answer(answer, DISCLAIMER, bold=sys.stdout.isatty()) + "\n")
    return 0


def _empty_result(question: str, error: str) -> dict:
    return {"question": question, "answered": False, "area": None, "results": [], "error": error}


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from bot.assistant import create_assistant
    from bot.console import run_console

    assistant = create_assistant(settings, progress)
    asyncio.run(run_console(assistant))
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.runner import run_bots

    return run_bots(settings, progress)


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from bot.assistant import configured_retriever
    from retrieval.evaluate import DEFAULT_EVAL_FILE, evaluate, format_report

    retriever = configured_retriever(settings, progress)
    report = evaluate(retriever, args.file or DEFAULT_EVAL_FILE, calibrate=args.calibrate)
    print(format_report(report))
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bot.benchmark import run_benchmark

    print(run_benchmark(settings, questions=args.questions, progress=progress))
    return 0


if __name__ == "__main__":
    sys.exit(main())
