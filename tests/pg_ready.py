"""`make test-pg`'s first step: exit 1, saying so, unless a PostgreSQL server answers at
the URL given (so the PostgreSQL tests fail rather than skip without one)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg


async def _check(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    await conn.close()


def main(url: str) -> int:
    try:
        asyncio.run(_check(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        print(f"make test-pg: no PostgreSQL server answers at {url} ({e}); start one or "
              "set PG_URL=postgresql://...", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
