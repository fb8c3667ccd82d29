"""Connect one process's stdout to another's stdin, as ``printf ... | sort`` does.

Run with ``python examples/pipe_two.py``. Three ways:

1. **Hand one child's stream to the other** (``stdin=producer.stdout``): the
   simplest. The producer's pipe goes to the consumer as its stdin, and the
   parent's end is closed once the consumer has started (see docs/processes.md).
2. **An OS pipe** (``os.pipe()``): the producer writes straight into the consumer;
   the data never passes through Python. Pass the write end as the producer's
   ``stdout`` and the read end as the consumer's ``stdin``, then close both ends in
   the parent *at once*: the consumer only sees EOF when every write end is closed,
   ours included.
3. **Copying between aioproc streams**: both children get pipes to us, and a task
   copies ``producer.stdout`` to ``consumer.stdin``. Slower, but the parent can
   look at, count or transform the data on the way; flow control is kept, since
   ``drain()`` waits while the consumer is behind.
"""

from __future__ import annotations

import asyncio
import os

import aioproc
from aioproc import PIPE

WORDS = "cherry\\napple\\nbanana\\n"  # printf expands the \n


async def handed_over() -> bytes:
    async with aioproc.spawn(["printf", WORDS], stdout=PIPE) as producer:
        async with aioproc.spawn(["sort"], stdin=producer.stdout, stdout=PIPE) as consumer:
            out, _ = await consumer.communicate()
        await producer.wait()
    assert out is not None
    return out


async def with_os_pipe() -> bytes:
    read_end, write_end = os.pipe()
    try:
        producer = await aioproc.spawn(["printf", WORDS], stdout=write_end)
        consumer = await aioproc.spawn(["sort"], stdin=read_end, stdout=PIPE)
    finally:
        # The children have their own copies now; ours would keep sort waiting for EOF.
        os.close(read_end)
        os.close(write_end)
    async with producer, consumer:
        out, _ = await consumer.communicate()
        await producer.wait()
    assert out is not None
    return out


async def copy(src: aioproc.ProcessReader, dst: aioproc.ProcessWriter) -> None:
    """Copy ``src`` to ``dst`` until EOF, then close ``dst`` (the consumer's EOF)."""
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()  # waits while the consumer is behind: memory stays bounded
    finally:
        dst.close()


async def with_copy() -> bytes:
    async with (
        aioproc.spawn(["printf", WORDS], stdout=PIPE) as producer,
        aioproc.spawn(["sort"], stdin=PIPE, stdout=PIPE) as consumer,
    ):
        assert producer.stdout is not None
        assert consumer.stdin is not None
        assert consumer.stdout is not None
        copier = asyncio.ensure_future(copy(producer.stdout, consumer.stdin))
        out = await consumer.stdout.read()
        await copier
        statuses = await asyncio.gather(producer.wait(), consumer.wait())
        assert all(s.success for s in statuses), statuses
    return out


async def main() -> None:
    print("handed:   ", (await handed_over()).decode().split())
    print("os.pipe():", (await with_os_pipe()).decode().split())
    print("copying:  ", (await with_copy()).decode().split())
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
