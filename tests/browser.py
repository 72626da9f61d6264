"""Headless Chromium driven over the DevTools protocol: open a page, record what it did.

Debian's `chromium`, never a downloaded browser; aiohttp (already a test dependency) speaks
the protocol, so no browser-automation package is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium")
SETTLE_SECONDS = 0.5  # after the load event: time for a late script or request to show itself


@dataclass
class Visit:
    """What a page did while it loaded, and what a script read from it afterwards."""

    console: list[str] = field(default_factory=list)  # console calls and browser log errors
    errors: list[str] = field(default_factory=list)  # uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    result: Any = None


class DevTools:
    """One page target of a browser, over the browser's DevTools WebSocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse):
        self.socket, self.numbers = socket, itertools.count(1)
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.numbers)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        await self.socket.send_str(json.dumps(message))
        while True:
            reply = json.loads((await self.socket.receive(timeout=30)).data)
            if reply.get("id") == number:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    async def wait_for(self, method: str) -> None:
        while not any(event.get("method") == method for event in self.events):
            self.events.append(json.loads((await self.socket.receive(timeout=30)).data))

    async def drain(self, seconds: float) -> None:
        """Collect whatever the page still does for a moment."""
        try:
            while True:
                message = await self.socket.receive(timeout=seconds)
                self.events.append(json.loads(message.data))
        except TimeoutError:
            return


async def visit(url: str, script: str, width: int = 1024, height: int = 768) -> Visit:
    """Load `url` in a fresh headless Chromium of that window size, then evaluate `script`."""
    assert CHROMIUM, "chromium is not installed"
    with tempfile.TemporaryDirectory(prefix="ipbot-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM, *chromium_flags(Path(profile)), stderr=asyncio.subprocess.PIPE
        )
        try:
            endpoint = await devtools_endpoint(process)
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(endpoint, max_msg_size=0) as socket,
            ):
                return await load(DevTools(socket), url, script, width, height)
        finally:
            process.kill()
            await process.wait()


def chromium_flags(profile: Path) -> list[str]:
    flags = [
        "--headless",
        "--disable-gpu",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "about:blank",
    ]
    if os.geteuid() == 0:
        flags.insert(0, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return flags


async def devtools_endpoint(process: asyncio.subprocess.Process) -> str:
    """Chromium prints `DevTools listening on ws://...` on stderr once it is ready."""
    assert process.stderr is not None
    seen: list[str] = []
    while line := await asyncio.wait_for(process.stderr.readline(), timeout=60):
        text = line.decode(errors="replace").strip()
        if text.startswith("DevTools listening on "):
            return text.removeprefix("DevTools listening on ")
        seen.append(text)
    raise RuntimeError("chromium exited before it was ready:\n" + "\n".join(seen[-20:]))


async def load(tools: DevTools, url: str, script: str, width: int, height: int) -> Visit:
    target = await tools.send("Target.createTarget", url="about:blank")
    attached = await tools.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
    tools.session = attached["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        await tools.send(f"{domain}.enable")
    await tools.send(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    await tools.send("Page.navigate", url=url)
    await tools.wait_for("Page.loadEventFired")
    await tools.drain(SETTLE_SECONDS)
    result = await tools.send("Runtime.evaluate", expression=script, returnByValue=True)
    page = Visit(result=result["result"].get("value"))
    for event in tools.events:
        record(page, event.get("method", ""), event.get("params", {}))
    return page


def record(page: Visit, method: str, params: dict[str, Any]) -> None:
    if method == "Runtime.consoleAPICalled":
        page.console.append(f"console.{params['type']}: {params.get('args')}")
    elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
        page.console.append(f"{params['entry']['level']}: {params['entry']['text']}")
    elif method == "Runtime.exceptionThrown":
        page.errors.append(str(params["exceptionDetails"]))
    elif method == "Network.requestWillBeSent":
        page.requests.append(params["request"]["url"])
