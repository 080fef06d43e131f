"""The image's command, run without a Docker engine: deploy/Dockerfile's CMD with its ENV.

A Docker engine may be absent where tests run, so this test does what the image does
with what it would hold: the interpreter running the tests has the dependencies the
builder stage installs (`pip install .`: pyproject's dependencies, checked below), the
final stage's ENV is the environment (image paths mapped to this checkout and temp
dirs: the flows COPY'd in, the data VOLUME), the Compose env example adds the tokens an
operator must set, and the CMD is started as is (`ivr serve --host 0.0.0.0`, port from
IVR_PORT). Then: HEALTHCHECK's own command passes, /healthz answers, STOPSIGNAL (SIGTERM)
ends it with status 0, and nothing was written outside the volume (the Kubernetes pod
runs with a read-only root filesystem).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import aiohttp
from packaging.requirements import Requirement

from ivr.sim.run import free_port
from tests.conftest import ROOT
from tests.unit.test_deploy import DEPLOY, dockerfile_env, dockerfile_stages, env_file, json_list

IMAGE_VENV_BIN = "/opt/venv/bin"


def test_this_interpreter_has_what_the_builder_installs() -> None:
    """The builder installs the project without extras: every dependency in pyproject that
    applies to this Python is installed here at a version pyproject accepts."""
    builder = dockerfile_stages()[0]
    installs = [rest for ins, rest in builder if ins == "RUN" and "pip install" in rest]
    assert installs and installs[-1].split("&&")[0].split()[-1] == "."
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in deps:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req}: {version}"


def _image_paths(tmp_path: Path) -> dict[str, Path]:
    """Where the image's paths are here: COPY'd flows -> this checkout's, each VOLUME ->
    a temp dir, the WORKDIR -> an empty temp dir."""
    final = dockerfile_stages()[-1]
    paths: dict[str, Path] = {}
    for ins, rest in final:
        words = rest.split()
        if ins == "COPY" and not words[0].startswith("--from"):
            source, dest = words[0], words[-1]
            paths[dest.rstrip("/")] = ROOT / Path(source).parent
        elif ins == "VOLUME":
            for volume in json_list(rest):
                paths[volume] = tmp_path / "volume" / volume.strip("/").replace("/", "_")
        elif ins == "WORKDIR":
            paths[rest] = tmp_path / "workdir"
    for path in paths.values():
        if tmp_path in path.parents:
            path.mkdir(parents=True, exist_ok=True)
    return paths


def _container_env(tmp_path: Path, port: int) -> tuple[dict[str, str], Path]:
    paths = _image_paths(tmp_path)
    workdir = next(p for p in paths.values() if p.name == "workdir")
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    # This checkout's ivr package first, as the image has its own installed.
    env["PYTHONPATH"] = str(ROOT)
    for key, value in dockerfile_env(dockerfile_stages()[-1]).items():
        value = value.replace("$PATH", os.environ.get("PATH", ""))
        value = value.replace(IMAGE_VENV_BIN, str(Path(sys.executable).parent))
        for image_path, here in sorted(paths.items(), key=lambda kv: -len(kv[0])):
            if value == image_path or value.startswith(image_path + "/"):
                value = str(here) + value[len(image_path):]
                break
        env[key] = value
    # What an operator adds (deploy/ivr.env.example): the tokens and the public URL, so
    # the public bind passes the start-up check. No PostgreSQL here: the image's SQLite
    # default on its volume stands in for IVR_DB.
    example = env_file(DEPLOY / "ivr.env.example")
    for key in ("TWILIO_AUTH_TOKEN", "IVR_PUBLIC_URL", "IVR_METRICS_TOKEN"):
        env[key] = example[key]
    env["IVR_PORT"] = str(port)
    return env, workdir


async def test_the_image_command_serves_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    final = dockerfile_stages()[-1]
    cmd = json_list(next(rest for ins, rest in final if ins == "CMD"))
    healthcheck = next(rest for ins, rest in final if ins == "HEALTHCHECK")
    probe = json_list(healthcheck[healthcheck.index("CMD") + len("CMD"):].strip())
    stop = next(rest for ins, rest in final if ins == "STOPSIGNAL")
    port = free_port("0.0.0.0")
    env, workdir = _container_env(tmp_path, port)
    assert env["IVR_FLOWS"] == str(ROOT / "flows")
    program = shutil.which(cmd[0], path=env["PATH"])
    argv = [program, *cmd[1:]] if program else [sys.executable, "-m", "ivr", *cmd[1:]]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=workdir, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> None:
                while proc.returncode is None:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            if resp.status == 200 and (await resp.json())["ok"] is True:
                                return
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
                raise AssertionError("the server exited:\n" + (await errors).decode())

            await asyncio.wait_for(healthy(), 120)
        # HEALTHCHECK's own command, with the container's environment, says healthy.
        check = await asyncio.create_subprocess_exec(
            *probe, env=env, cwd=workdir, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(check.communicate(), 30)
        assert check.returncode == 0, out.decode()
        proc.send_signal(getattr(signal, stop))
        # No live call: the drain has nothing to wait for, the exit is clean.
        assert await asyncio.wait_for(proc.wait(), 60) == 0, (await errors).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        errors.cancel()
    _only_the_volume_written(env, workdir)


def _only_the_volume_written(env: dict[str, str], workdir: Path) -> None:
    """Writes went to the volume (database, prompt cache), none to the working directory."""
    assert list(workdir.iterdir()) == []
    database = Path(env["IVR_DB"])
    assert database.exists() and database.parent == Path(env["IVR_CACHE_DIR"]).parent
