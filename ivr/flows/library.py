"""The flows a server runs: loaded from a directory, routed by called number, hot-reloaded.

A flow file that fails to load never replaces one that works: on reload each file is
loaded on its own, a broken file's error is logged and its previous version kept. Live
calls hold the `Flow` object they started with, so a reload never changes a call in
progress.
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
        """Pick up changed, new and removed files; returns whether anything changed."""
        changed = False
        seen: set[Path] = set()
        for path in self._files():
            seen.add(path)
            with contextlib.suppress(FileNotFoundError):
                mtime = path.stat().st_mtime
                old = self._by_file.get(path)
                if old is not None and old[0] == mtime:
                    continue
                try:
                    flow = load_flow(path)
                except FlowError as exc:
                    self.rejected += 1
                    # Remember the mtime so a broken file is reported once, not every poll.
                    if old is not None:
                        self._by_file[path] = (mtime, old[1])
                    log.error("flow_rejected", file=str(path), error=str(exc),
                              kept="previous version" if old else "nothing")
                    continue
                self._by_file[path] = (mtime, flow)
                changed = True
        for path in set(self._by_file) - seen:
            del self._by_file[path]
            changed = True
        changed = self._load_routes() or changed
        if changed:
            self._publish()
            self.reloads += 1
            log.info("flows_reloaded", flows=sorted(self.flows))
        return changed

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
        except FileNotFoundError:
            return False
        if mtime == self._routes_mtime:
            return False
        self._routes_mtime = mtime
        try:
            data = yaml.safe_load(path.read_text()) or {}
            routes = {str(k): str(v) for k, v in (data.get("numbers") or {}).items()}
        except (yaml.YAMLError, AttributeError) as exc:
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
