"""Writes `async_client.py` from `client.py`: `AsyncCourier` is `Courier` with every call awaited.

The two clients must keep one surface, so one is generated from the other (as httpcore does with unasync) rather
than kept in step by hand; `tests/test_async.py` fails when the file on disk is not what this makes.

    python -m tools.unasync          # rewrite src/courier_client/async_client.py
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "courier_client"

#: Plain replacements, in order.
REPLACEMENTS = [
    (
        "`Courier`, the synchronous client. `AsyncCourier` (in `async_client`) has the same surface with `await`.",
        "`AsyncCourier`: `Courier`'s surface for asyncio, every call awaited and every `iter` an async iterator.\n\n"
        "Generated from client.py by tools/unasync.py; edit that file and run `python -m tools.unasync`.\n",
    ),
    ("import time\n", "import asyncio\nimport time\n"),
    (
        "from collections.abc import Callable, Iterable, Iterator,",
        "from collections.abc import AsyncIterator, Awaitable, Callable, Iterable,",
    ),
    ('__all__ = ["Courier", "ReplayJob"]', '__all__ = ["AsyncCourier", "ReplayJob"]'),
    ("class Courier:", "class AsyncCourier:"),
    (
        "Thread-safe; keep one per process and `close()` it (or use `with`).",
        "Keep one per event loop and `await aclose()` it (or `async with`).",
    ),
    ("httpx.Client", "httpx.AsyncClient"),
    ("    def close(self) -> None:", "    async def aclose(self) -> None:"),
    ("            self._http.close()", "            await self._http.aclose()"),
    ("    def __enter__(self) -> Courier:", "    async def __aenter__(self) -> AsyncCourier:"),
    (
        "    def __exit__(self, *_: object) -> None:\n        self.close()",
        "    async def __aexit__(self, *_: object) -> None:\n        await self.aclose()",
    ),
    ("response = self._http.send(request)", "response = await self._http.send(request)"),
    ("time.sleep(", "await asyncio.sleep("),
    ("client: Courier", "client: AsyncCourier"),
    ("ReplayJob", "AsyncReplayJob"),
    ("return self.send_event(", "return await self.send_event("),
    ("            self.refresh()", "            await self.refresh()"),
    ("Iterator[", "AsyncIterator["),
    (
        "def _follow(fetch: Callable[[str | None], Page[T]]) -> AsyncIterator[T]:",
        "async def _follow(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:",
    ),
    (
        "        page = fetch(cursor)\n        yield from page.data",
        "        page = await fetch(cursor)\n        for item in page.data:\n            yield item",
    ),
]


def generate(sync_source: str) -> str:
    text = sync_source
    for old, new in REPLACEMENTS:
        if old not in text:
            raise ValueError(f"client.py no longer has {old!r}: update tools/unasync.py")
        text = text.replace(old, new)
    # Every method but constructors, properties and iterators becomes a coroutine, and every call of the API awaited
    # (except inside `iter`'s lambdas, which hand the coroutine to `_follow`).
    text = re.sub(r"^    def (?!__init__|iter\b|id\b)", "    async def ", text, flags=re.M)
    return re.sub(r"(?<!lambda cursor: )(?<!await )\bself\.(_client\.)?_run\(", r"await self.\1_run(", text)


def main() -> None:
    (PACKAGE / "async_client.py").write_text(generate((PACKAGE / "client.py").read_text()))


if __name__ == "__main__":
    main()
