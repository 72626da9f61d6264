"""Corpus refresh without downtime: /reload, the quality gate, /promote, /versions, /rollback.

Every version change is a request row in the database, handled one at a time by the running
bot: `ipbot corpus reload` on another machine reaches it, and two moderators pressing /reload
together get two orderly refreshes, never two half swaps. Builds and evals run in a thread, so
questions keep being answered by the live version until the swap, which is one assignment;
questions in flight finish on the version they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import logging
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.store import RefreshRequest, Store, VersionInfo, VersionStatus
from retrieval.corpus import Corpus, CorpusError, Passage, check_corpus
from retrieval.evaluate import GATE, gate_figures, regressions
from retrieval.index import KEEP_BUILDS
from retrieval.multilingual import LanguageDetector, Multilingual
from retrieval.search import Retriever
from retrieval.versions import Build, Versions, VersionUnavailableError

log = logging.getLogger(__name__)

# a request still running this long after it was made was left by a process that died (a
# rebuild takes a few minutes at most); younger ones may be another replica's, at work
ABANDONED_AFTER = dt.timedelta(minutes=30)
ABANDONED_CHECK_SECONDS = 60.0
WAIT_SECONDS = 900.0  # how long a moderator's /reload waits for its outcome
# a request still pending this long after it was made has nobody waiting for it (the asker
# withdraws it when the wait ends; one killed outright cannot)
UNCLAIMED_AFTER = dt.timedelta(seconds=WAIT_SECONDS)
FAILURE_LOG_SECONDS = 60.0  # a run of failed steps is logged again at most this often
POLL_SECONDS = 2.0  # how soon a request from the command line, or another replica's swap, is seen
MAX_PROBLEMS_SHOWN = 15
DISK_FULL = (
    "The refresh failed: the disk is full (no space left for the new version's files). The "
    "live version keeps answering; free some space, then /reload again."
)
STARTUP = "start-up"  # who asked, for what a start does by itself
OnSwap = Callable[[Build], Awaitable[str | None]]  # runs after a swap; may add a summary line


@dataclass(frozen=True)
class Outcome:
    """How a request ended: the moderator's summary and updates offered for publishing."""

    ok: bool
    text: str
    offers: tuple[str, ...] = ()


def corpus_changes(old: Corpus, new: Corpus) -> dict[str, list[str]]:
    """Passage ids added, changed and removed (moving a passage in its file is no change)."""

    def content(p: Passage) -> Passage:
        return dataclasses.replace(p, file="", line=0)

    before = {p.id: content(p) for p in old.passages}
    after = {p.id: content(p) for p in new.passages}
    return {
        "added": sorted(after.keys() - before.keys()),
        "changed": sorted(i for i in after.keys() & before.keys() if after[i] != before[i]),
        "removed": sorted(before.keys() - after.keys()),
    }


def failure_text(exc: BaseException | None) -> str:
    """What the moderator can do about a refresh that failed: a full disk is theirs to fix."""
    while exc is not None:
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or "No space left on device" in str(exc):  # FAISS and numpy say it in words
            return DISK_FULL
        exc = exc.__cause__ or exc.__context__
    return "The refresh failed unexpectedly; the live version keeps answering."


def file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class Refresher:
    """Turns moderators' refresh requests into version changes of the live retriever."""

    def __init__(
        self,
        store: Store,
        retriever: Retriever,
        corpus_dir: Path,
        eval_file: Path,
        on_swap: OnSwap | None = None,
    ):
        self.store = store
        self.retriever = retriever
        self.corpus_dir = Path(corpus_dir)
        self.eval_file = Path(eval_file)
        self.on_swap = on_swap
        self._wake = asyncio.Event()
        self._stopping = False
        self._unavailable: str | None = None  # a live build this process could not open
        self._failing_since: float | None = None  # when the worker's steps began to fail
        self._failure_logged = 0.0
        self._abandoned_checked = time.monotonic()  # start() has just looked
        self.checking: int | None = None  # the request start() made to gate a changed corpus

    @property
    def versions(self) -> Versions | None:
        return self.retriever.versions

    # -- the worker ----------------------------------------------------------------------

    async def start(self) -> None:
        """Record the version being served, and settle what a crash left running."""
        abandoned = await self.store.abandon_refreshes(ABANDONED_AFTER)
        if abandoned:
            log.warning("%d refresh request(s) were interrupted by a restart", abandoned)
        if unclaimed := await self.store.withdraw_unclaimed_refreshes(UNCLAIMED_AFTER):
            log.warning("%d refresh request(s) nobody waits for any more were withdrawn", unclaimed)
        await self._settle_live()
        await self._check_unchecked()

    async def _check_unchecked(self) -> None:
        """A corpus that changed on disk while the bot was down (edited files, or a /reload a
        crash interrupted) goes through the gate like a /reload, unless moderators already
        turned it away: the live version answers meanwhile."""
        waiting = self.retriever.unchecked
        if waiting is None:
            return
        self.retriever.unchecked = None
        turned_away = await self._turned_away()
        if waiting in turned_away:
            log.warning(
                "the corpus on disk is version %d, which moderators turned away; still serving "
                "the live version (/promote %d serves it)",
                turned_away[waiting],
                turned_away[waiting],
            )
            return
        log.warning("the corpus on disk changed while the bot was stopped; checking it (/reload)")
        self.checking = await self.store.request_refresh("reload", "", STARTUP)
        self._wake.set()

    async def _turned_away(self) -> dict[str, int]:
        """Corpus hashes of the versions a moderator (or the gate) held or rolled back."""
        return {
            v.corpus_hash: v.id
            for v in await self.store.versions(50)
            if v.status in (VersionStatus.HELD, VersionStatus.ROLLED_BACK)
        }

    async def run(self) -> None:
        """Handle requests one at a time, and follow the live version set elsewhere.

        First the live version's test figures are measured (in a thread, once per eval file),
        so that /versions shows them before any reload.
        """
        try:
            await self._live_figures()
        except Exception:
            log.exception("refresh worker: the live version's test figures failed")
        while not self._stopping:
            try:
                request = await self.store.claim_refresh()
                if request is not None:
                    await self._handle(request)
                    continue
                await self._follow_live()
                await self._settle_abandoned()
                self._recovered()
            except Exception as exc:
                self._failed(exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def _settle_abandoned(self) -> None:
        """Now and then, fail requests a dead process left running (see ABANDONED_AFTER)."""
        now = time.monotonic()
        if now - self._abandoned_checked < ABANDONED_CHECK_SECONDS:
            return
        self._abandoned_checked = now
        if abandoned := await self.store.abandon_refreshes(ABANDONED_AFTER):
            log.warning("%d refresh request(s) were left running by a stopped bot", abandoned)
        if unclaimed := await self.store.withdraw_unclaimed_refreshes(UNCLAIMED_AFTER):
            log.warning("%d refresh request(s) nobody waits for any more were withdrawn", unclaimed)

    def _failed(self, exc: Exception) -> None:
        """Log a failed step: the first of a run in full, then one line a minute at most. A
        database outage fails every step, every two seconds: a traceback each time buried the
        console chat and the service log."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._failure_logged = now
            log.exception("refresh worker: a step failed; trying again shortly")
        elif now - self._failure_logged >= FAILURE_LOG_SECONDS:
            self._failure_logged = now
            waited = now - self._failing_since
            log.warning("refresh worker: still failing after %.0f s: %r", waited, exc)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "refresh worker: working again after %.0f s",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def request(
        self, action: str, argument: str, actor: str, timeout: float = WAIT_SECONDS
    ) -> RefreshRequest:
        """Queue a request and wait for its outcome (the worker may be in another process).

        A request no bot has taken when the wait ends, or when the asker leaves (Ctrl+C in the
        console), is withdrawn: carried out later, it would change the live version with
        nobody watching.
        """
        number = await self.store.request_refresh(action, argument, actor)
        self._wake.set()
        try:
            finished = await wait_for_request(self.store, number, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.withdraw_refresh(number))
            raise
        if finished.status == "pending" and await self.store.withdraw_refresh(number):
            return dataclasses.replace(finished, status="withdrawn")
        return finished

    async def _handle(self, request: RefreshRequest) -> None:
        try:
            match request.action:
                case "reload":
                    outcome = await self.reload(request.requested_by)
                case "promote":
                    outcome = await self.promote(request.argument, request.requested_by)
                case "rollback":
                    outcome = await self.rollback(request.requested_by)
                case _:
                    outcome = Outcome(False, f"Unknown request: {request.action}.")
        except Exception as exc:  # the live version is untouched: say so, details in the log
            log.exception("refresh request %s failed", request.id)
            outcome = Outcome(False, failure_text(exc))
        await self.store.finish_refresh(request.id, outcome.ok, outcome.text, outcome.offers)
        if request.requested_by == STARTUP:  # nobody waits for this one: the log (and the
            log.warning("start-up check: %s", outcome.text)  # console chat) must tell
        result = "done" if outcome.ok else "refused"
        await self.store.audit(request.requested_by, request.action, request.argument, result)

    # -- the three actions --------------------------------------------------------------

    async def reload(self, actor: str) -> Outcome:
        """Validate, build beside the live version, check, and swap in if no worse."""
        versions = self.versions
        if versions is None:
            return Outcome(False, "This bot was started without versions; restart it to reload.")
        started = time.monotonic()
        corpus, problems = await asyncio.to_thread(check_corpus, self.corpus_dir)
        self.retriever.problems = tuple(problems)  # /about shows the files as they are now
        if problems:
            return Outcome(False, problems_text(problems))
        live = self._live_build()
        if corpus.hash == live.corpus.hash and corpus.updates == live.corpus.updates:
            return Outcome(True, "The corpus has not changed; the live version keeps answering.")
        try:
            candidate = await asyncio.to_thread(versions.candidate, self.corpus_dir)
        except CorpusError as exc:
            return Outcome(False, problems_text(exc.problems))
        before = await self._live_figures()
        after = await asyncio.to_thread(self._figures, candidate)
        changes = corpus_changes(live.corpus, candidate.corpus)
        number = await self._record(candidate, VersionStatus.HELD, actor, after, changes)
        lines = [changes_line(changes), *figures_lines(before, after)]
        worse = regressions(before, after) if before and after else ["no test questions found"]
        if worse:
            return Outcome(False, held_text(number, worse, lines))
        extra = await self._make_live(candidate, number)
        offers = await self._new_updates(live.corpus, candidate.corpus)
        took = time.monotonic() - started
        lines = [
            f"Version {number} ({candidate.corpus.version}) is now live.",
            *lines,
            f"Took {took:.0f} s.",
            *([extra] if extra else []),
            *offers_lines(offers),
        ]
        return Outcome(True, "\n".join(lines), offers)

    async def promote(self, argument: str, actor: str) -> Outcome:
        """Serve a kept version that the gate held back (or one rolled back from)."""
        if not argument.strip().isdigit():
            return Outcome(False, "Say which version to promote, e.g. /promote 7 (see /versions).")
        info = await self.store.version(int(argument))
        if info is None:
            return Outcome(False, f"There is no version {argument}. See /versions.")
        if info.status == VersionStatus.LIVE:
            return Outcome(True, f"Version {info.id} is already live.")
        build = await self._open(info)
        if build is None:
            return Outcome(False, f"Version {info.id}'s files are no longer on disk.")
        old = self._live_build().corpus
        extra = await self._make_live(build, info.id)
        offers = await self._new_updates(old, build.corpus)
        lines = [f"Version {info.id} ({info.corpus_version}) is now live, by your decision."]
        return Outcome(
            True, "\n".join([*lines, *([extra] if extra else []), *offers_lines(offers)]), offers
        )

    async def rollback(self, actor: str) -> Outcome:
        """Return to the version that was live before this one, with its own corpus."""
        target = await self.store.previous_version()
        if target is None:
            return Outcome(False, "There is no earlier version to return to. See /versions.")
        build = await self._open(target)
        if build is None:
            return Outcome(False, f"Version {target.id}'s files are no longer on disk.")
        leaving = await self.store.live_version()
        await self._make_live(build, target.id, leaving=VersionStatus.ROLLED_BACK)
        left = (
            f" Version {leaving.id} can be restored with /promote {leaving.id}." if leaving else ""
        )
        return Outcome(
            True,
            f"Rolled back: version {target.id} ({target.corpus_version}) is live again.{left}",
        )

    # -- swapping --------------------------------------------------------------------------

    def _live_build(self) -> Build:
        state = self.retriever.state
        return Build(state.corpus, state.index, state.translated)

    async def _make_live(
        self, build: Build, number: int, leaving: VersionStatus = VersionStatus.PREVIOUS
    ) -> str | None:
        """Point the links at it (what a restart serves), record it, then swap it in."""
        versions = self.versions
        assert versions is not None
        await asyncio.to_thread(versions.activate, build)
        await self.store.make_live(number, leaving)
        return await self._swap(build)

    async def _swap(self, build: Build) -> str | None:
        retriever = self.retriever
        if build.translated is not None and retriever.multilingual is None:
            versions = self.versions
            if versions is not None and versions.multilingual is not None:
                retriever.multilingual = Multilingual(
                    LanguageDetector(), versions.multilingual, build.translated
                )
        retriever.swap(build.corpus, build.index, build.translated)
        retriever.problems = ()
        log.info("now serving version %s (%s)", build.name, build.corpus.version)
        return await self.on_swap(build) if self.on_swap is not None else None

    async def _record(
        self,
        build: Build,
        status: VersionStatus,
        actor: str,
        figures: dict[str, Any] | None = None,
        changes: dict[str, list[str]] | None = None,
    ) -> int:
        corpus = build.corpus
        await self._share(build)
        return await self.store.record_version(
            build.name,
            build.translated_name,
            corpus.version,
            corpus.hash,
            len(corpus.passages),
            status,
            actor,
            figures,
            dict(changes) if changes else None,
        )

    async def _share(self, build: Build) -> None:
        """On PostgreSQL, replicas may not share a disk: the build files go to the database,
        and a replica that lacks them fetches them there (see `_open`)."""
        versions = self.versions
        if versions is None or not self.store.shared:
            return
        if not await self.store.has_artefact(build.name):
            await self.store.save_artefact(
                build.name, await asyncio.to_thread(versions.pack, build)
            )
        kept = [v.build for v in await self.store.versions(KEEP_BUILDS + 1)]
        live = await self.store.live_version()
        await self.store.prune_artefacts([*kept, build.name, *([live.build] if live else [])])

    async def _open(self, info: VersionInfo) -> Build | None:
        """A recorded version from this disk, or from the database if another replica built it."""
        versions = self.versions
        if versions is None:
            return None
        try:
            return await asyncio.to_thread(versions.open, info.build, info.translated_build)
        except VersionUnavailableError as exc:
            archive = await self.store.artefact(info.build)
            if archive is None:
                log.warning("%s", exc)
                return None
        try:
            await asyncio.to_thread(versions.unpack, archive)
            build = await asyncio.to_thread(versions.open, info.build, info.translated_build)
        except (VersionUnavailableError, OSError, tarfile.TarError) as exc:
            log.warning("version %d cannot be fetched from the database: %s", info.id, exc)
            return None
        log.info("fetched version %d (%s) from the database", info.id, info.build)
        return build

    async def _settle_live(self) -> None:
        """At start: the version served becomes the recorded live one, unless it is a version
        a moderator turned away (held or rolled back), in which case the live one is served."""
        served = self._live_build()
        live = await self.store.live_version()
        if live is not None and live.build == served.name:
            return
        if live is not None and live.corpus_hash == served.corpus.hash:
            build = await self._open(live)  # another replica built these files first
            if build is not None:
                await asyncio.to_thread(self.versions.activate, build)  # type: ignore[union-attr]
                await self._swap(build)
                return
        if live is not None and served.corpus.hash in await self._turned_away():
            build = await self._open(live)
            if build is not None:
                log.warning(
                    "the corpus on disk is a version moderators turned away; serving version %d",
                    live.id,
                )
                await asyncio.to_thread(self.versions.activate, build)  # type: ignore[union-attr]
                await self._swap(build)
                return
        number = await self._record(served, VersionStatus.LIVE, STARTUP)
        await self.store.make_live(number)

    async def _follow_live(self) -> None:
        """Another process (a replica, or this bot before a restart) changed the live version."""
        live = await self.store.live_version()
        if live is None or live.build in (self.retriever.state.index.build, self._unavailable):
            return
        build = await self._open(live)
        if build is None:  # said once in the log; tried again when the live version changes
            self._unavailable = live.build
            return
        await self._swap(build)

    # -- the quality gate ----------------------------------------------------------------

    def _figures(self, build: Build) -> dict[str, Any]:
        if not self.eval_file.is_file():
            return {}
        current = self.retriever
        multilingual = None
        if current.multilingual is not None and build.translated is not None:
            multilingual = dataclasses.replace(current.multilingual, index=build.translated)
        trial = Retriever(build.corpus, build.index, current.embedder, current.policy, multilingual)
        return {**gate_figures(trial, self.eval_file), "eval": file_hash(self.eval_file)}

    async def _live_figures(self) -> dict[str, Any]:
        """The live version's figures, measured once per eval file and kept with it."""
        live = await self.store.live_version()
        if live is not None and live.figures.get("eval") == file_hash(self.eval_file):
            return live.figures
        figures = await asyncio.to_thread(self._figures, self._live_build())
        if live is not None and figures:
            await self.store.set_figures(live.id, figures)
        return figures

    async def _new_updates(self, old: Corpus, new: Corpus) -> tuple[str, ...]:
        known = {u.id for u in old.updates}
        fresh = [u.id for u in new.updates if u.id not in known]
        return tuple([u for u in fresh if not await self.store.is_published(u)])


async def wait_for_request(
    store: Store, number: int, timeout: float, pickup: float | None = None
) -> RefreshRequest:
    """Poll a request until it is finished, or the time is up (then as it stands).

    With `pickup`, a request no bot has taken within that many seconds is withdrawn, so it
    does not run by surprise when a bot starts later.
    """
    started = time.monotonic()
    while True:
        request = await store.refresh_request(number)
        assert request is not None
        waited = time.monotonic() - started
        if request.status == "pending" and pickup is not None and waited >= pickup:
            if await store.withdraw_refresh(number):
                return dataclasses.replace(request, status="withdrawn")
            continue
        if request.status in ("done", "failed") or waited >= timeout:
            return request
        await asyncio.sleep(0.25)


async def versions_text(store: Store, limit: int = 8) -> str:
    """The kept versions, newest first, with the gate's figures: what /versions shows."""
    rows = await store.versions(limit)
    if not rows:
        return "No versions are recorded yet."
    lines = ["Versions (newest first):"]
    for info in rows:
        figures = info.figures
        quality = (
            f"top-3 {figures['recall_at_3']:.1%}, unanswered {figures['wrongly_abstained']:.1%}, "
            f"off-topic declined {figures['off_topic_declined']:.1%}"
            if "recall_at_3" in figures
            else "not yet checked"
        )
        when = info.created_at.strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"{info.id}. {info.status.upper()} · {info.corpus_version} · {info.passages} "
            f"passages · {when} UTC · {quality}"
        )
    lines.append("/rollback returns to the previous version; /promote N serves version N.")
    return "\n".join(lines)


def problems_text(problems: list) -> str:
    shown = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
    more = len(problems) - len(shown)
    return "\n".join(
        [
            f"The corpus has {len(problems)} problem(s), so nothing changed; "
            "the live version keeps answering. Fix these and /reload again:",
            *shown,
            *([f"... and {more} more (ipbot corpus validate lists them all)."] if more else []),
        ]
    )


def changes_line(changes: dict[str, list[str]]) -> str:
    def part(name: str) -> str:
        ids = changes.get(name, [])
        listed = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
        return f"{len(ids)} {name}" + (f" ({listed})" if ids else "")

    return "Passages: " + "; ".join(part(n) for n in ("added", "changed", "removed")) + "."


def figures_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    if not before or not after:
        return ["The test questions could not be run (no eval file found)."]
    lines = [f"Test questions ({int(after['questions'])}), before → after:"]
    for name, (label, _) in GATE.items():
        lines.append(f"  {label}: {before[name]:.1%} → {after[name]:.1%}")
    return lines


def held_text(number: int, worse: list[str], lines: list[str]) -> str:
    return "\n".join(
        [
            f"Version {number} was built but NOT switched on: it does worse than the live "
            "version on the test questions, so the live version keeps answering.",
            *[f"Worse: {w}" for w in worse],
            *lines,
            f"To serve it anyway: /promote {number}",
        ]
    )


def offers_lines(offers: tuple[str, ...]) -> list[str]:
    if not offers:
        return []
    return [f"New updates not yet published: {', '.join(offers)}. Press a button to publish."]
