"""The Dockerfile and compose file are linted here (no Docker engine runs on these machines)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_it_builds_from_a_pinned_base_and_runs_unprivileged() -> None:
    steps = instructions()
    base = next(arg for op, arg in steps if op == "FROM")
    assert re.fullmatch(r"python:3\.11[\w.-]*", base) and "latest" not in base
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "HEALTHCHECK" and "/healthz" in arg for op, arg in steps)
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert "--require-hashes -r requirements.lock" in runs
    assert "compile_catalogues" in runs


def test_it_copies_every_package_the_image_needs() -> None:
    copied = {arg.split()[0] for op, arg in instructions() if op == "COPY"}
    for needed in ("core", "flows", "bot", "api", "amparo", "migrations", "locales"):
        assert needed in copied, needed
        assert (ROOT / needed).is_dir()


def test_it_keeps_signal_cli_and_the_database_off_public_ports() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert compose["networks"]["internal"]["internal"] is True
    for name in ("db", "signal-cli"):
        assert "ports" not in services[name], name
        assert "internal" in services[name]["networks"]
    assert services["signal-cli"]["environment"]["MODE"] == "json-rpc"
    for port in services["amparo"]["ports"]:
        assert port.startswith("127.0.0.1:"), port
    for service in services.values():
        assert not str(service.get("image", "")).endswith(":latest")
    assert services["amparo"]["environment"]["AMPARO_MODE"] == "production"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
