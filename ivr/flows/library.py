"""The flows a server runs: loaded from a directory, routed by called number, hot-reloaded.

A flow file that fails to load never replaces one that works: on reload each file is
loaded on its own, a broken file's error is logged and its previous version kept. Live
calls hold the `Flow` object they started with, so a reload never changes a call in
progress.

A reload never leaves the server with nothing to run: when the directory is emptied,
removed, replaced by a file or cannot be listed, the last good set stays (logged once per
change of state), and any other error in one poll is logged and the next poll tries again.
A reload after the directory is fixed picks up its flows.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import structlog
import yaml

from ivr.errors import FlowError
from ivr.flows.load import flow_files_in, load_flow
from ivr.flows.model import Flow

log = structlog.get_logger("ivr.flows")

ROUTES_FILE = "routes.yaml"


class FlowLibrary:
    def __init__(self, directory: Path, *, default: str, routes: Path | None = None) -> None:
        self.directory = directory
        self.default = default
        self.routes_path = routes if routes is not None else directory / ROUTES_FILE
        self.flows: dict[str, Flow] = {}
        self.routes: dict[str, str] = {}
        self._by_file: dict[Path, tuple[float, Flow]] = {}
        self._routes_mtime: float | None = None
        self.reloads = 0
        self.rejected = 0
        self.reload_errors = 0
        self._degraded: str | None = None  # why the last poll kept the last good set

    def _files(self) -> list[Path]:
        return flow_files_in(self.directory)

    def load(self) -> None:
        """First load: every file must be valid (the server refuses to start otherwise)."""
        errors: list[str] = []
        for path in self._files():
            try:
                self._by_file[path] = (path.stat().st_mtime, load_flow(path))
            except FlowError as exc:
                errors.append(str(exc))
        if errors:
            raise FlowError("flows failed to load:\n" + "\n".join(errors))
        self._publish()
        self._load_routes()

    def reload(self) -> bool:
        """Pick up changed, new and removed files; returns whether anything changed.

        Never raises: the watcher calls this every second for the life of the process,
        and one bad poll (a file mid-write, a permission flip) must not end the watching.
        """
        try:
            return self._reload()
        except Exception as exc:  # a task root: log it and let the next poll retry
            self.reload_errors += 1
            log.exception("flows_reload_failed", directory=str(self.directory), error=repr(exc))
            return False

    def _reload(self) -> bool:
        try:
            files = self._files()
        except OSError as exc:  # exists but cannot be listed (permissions, I/O error)
            return self._keep_last_good(f"cannot list: {exc.strerror or exc}")
        if not files:
            what = "empty" if self.directory.is_dir() else "not a directory"
            return self._keep_last_good(what)
        by_file = dict(self._by_file)
        changed = False
        seen: set[Path] = set()
        for path in files:
            seen.add(path)
            with contextlib.suppress(FileNotFoundError):
                mtime = path.stat().st_mtime
                old = by_file.get(path)
                if old is not None and old[0] == mtime:
                    continue
                try:
                    flow = load_flow(path)
                except FlowError as exc:
                    self.rejected += 1
                    # Remember the mtime so a broken file is reported once, not every poll.
                    if old is not None:
                        by_file[path] = (mtime, old[1])
                    log.error("flow_rejected", file=str(path), error=str(exc),
                              kept="previous version" if old else "nothing")
                    continue
                by_file[path] = (mtime, flow)
                changed = True
        for path in set(by_file) - seen:
            del by_file[path]
            changed = True
        if not by_file and self.flows:
            return self._keep_last_good("no loadable flow file")
        self._by_file = by_file
        if self._degraded is not None:
            log.info("flows_directory_recovered", directory=str(self.directory))
            self._degraded = None
        changed = self._load_routes() or changed
        if changed:
            self._publish()
            self.reloads += 1
            log.info("flows_reloaded", flows=sorted(self.flows))
        return changed

    def _keep_last_good(self, why: str) -> bool:
        """Keep serving the flows loaded last: a call answered by yesterday's flow beats
        every call failing because a deploy emptied the directory for a moment."""
        if why != self._degraded:
            self.reload_errors += 1
            log.error("flows_directory_unusable", directory=str(self.directory), why=why,
                      kept=sorted(self.flows))
            self._degraded = why
        return False

    def _publish(self) -> None:
        flows: dict[str, Flow] = {}
        for path, (_, flow) in sorted(self._by_file.items()):
            if flow.name in flows:
                log.error("duplicate_flow_name", flow=flow.name, file=str(path))
                continue
            flows[flow.name] = flow
        self.flows = flows  # one assignment: readers see the old or the new set, never half

    def _load_routes(self) -> bool:
        path = self.routes_path
        try:
            mtime = path.stat().st_mtime
        except OSError:  # absent (or unreadable): the routes loaded last stay
            return False
        if mtime == self._routes_mtime:
            return False
        self._routes_mtime = mtime
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            routes = {str(k): str(v) for k, v in (data.get("numbers") or {}).items()}
        except (yaml.YAMLError, AttributeError, UnicodeDecodeError, OSError) as exc:
            log.error("routes_rejected", file=str(path), error=str(exc))
            return False
        self.routes = routes
        return True

    def pick(self, requested: str | None, called: str | None) -> Flow:
        """The `flow` stream parameter wins, then the called number's route, then the default."""
        if requested and requested not in self.flows:
            log.warning("unknown_flow", flow=requested, using=self.default)
        for name in (requested, self.routes.get(called or ""), self.default):
            if name and name in self.flows:
                return self.flows[name]
        return next(iter(self.flows.values()))
