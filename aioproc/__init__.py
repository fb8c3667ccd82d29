"""aioproc: asyncio-native subprocesses that are correct under races."""
