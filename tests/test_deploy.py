"""The Dockerfile and compose file are linted here (no Docker engine runs on these machines)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_signal_cli_runs_without_a_send_log_and_with_a_scrubbed_log() -> None:
    """R6: signal-cli keeps the content of every message sent (for resending) in account.db
    on its volume unless --disable-send-log (R17), and logs numbers unless --scrub-log.
    signal-cli-rest-api has no setting for either: the wrapper compose mounts adds them."""
    service = compose()["services"]["signal-cli"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"] if m.startswith("./")}
    wrapper = ROOT / mounts["/usr/local/bin/signal-cli"]
    assert mounts["/usr/local/bin/signal-cli"] == "./deploy/signal-cli"
    assert wrapper.stat().st_mode & 0o111 == 0o111  # executable by the container's user
    assert service["volumes"][1].endswith(":ro")
    lines = [line for line in wrapper.read_text().splitlines() if not line.startswith("#")]
    assert wrapper.read_text().startswith("#!/bin/sh\n")
    # The real binary, by absolute path (the wrapper is first on PATH: no loop).
    assert lines == ['exec /usr/bin/signal-cli --disable-send-log --scrub-log "$@"']
    env = service["environment"]
    assert env["JSON_RPC_TRUST_NEW_IDENTITIES"] == "on-first-use"
    for kind in ("STORIES", "AVATARS", "STICKERS"):
        assert env[f"JSON_RPC_IGNORE_{kind}"] == "true", kind
    assert "JSON_RPC_IGNORE_ATTACHMENTS" not in env  # evidence arrives as attachments


def test_signal_attachments_are_held_in_memory_not_on_the_volume() -> None:
    """R17: signal-cli writes each attachment, in clear, under its data directory until
    Amparo fetches and deletes it; there it would be on the volume's disk (and its backups),
    where a deleted file can be read back. A tmpfs over that directory keeps them in memory."""
    service = compose()["services"]["signal-cli"]
    data = next(v.split(":")[1] for v in service["volumes"] if v.startswith("signal-cli-data:"))
    held = {t.split(":")[0]: t.split(":")[1] for t in service["tmpfs"]}
    assert held == {f"{data}/attachments": "size=512m"}


def test_signal_cli_shares_no_outward_network_with_anything() -> None:
    """Its API has no authentication (read every defender's messages, send as the bot, link
    a device): it was on `outside`, the network the host's TLS proxy comes in through. Only
    the internal network and an egress network of its own (to reach Signal's servers)."""
    spec = compose()
    services, networks = spec["services"], spec["networks"]
    outward = [n for n in services["signal-cli"]["networks"] if not networks[n].get("internal")]
    assert outward == ["signal-egress"]
    members = [name for name, s in services.items() if "signal-egress" in s.get("networks", [])]
    assert members == ["signal-cli"]
    assert not (networks["signal-egress"] or {}).get("ipam")  # no fixed subnet to aim at
    assert "ports" not in services["signal-cli"] and "expose" not in services["signal-cli"]
    assert services["amparo"]["environment"]["AMPARO_SIGNAL_SERVICE"] == "signal-cli:8080"


def test_the_image_user_has_a_fixed_uid_the_docs_give() -> None:
    """The master key file is mounted with its host owner: it must be the image user's, and
    that user's uid must not change with the next base image's user list."""
    runs = " ".join(arg for op, arg in instructions() if op == "RUN")
    assert re.search(r"groupadd --system --gid 10001 amparo\b", runs)
    assert re.search(r"useradd --system --uid 10001 --gid 10001\b.* amparo\b", runs)
    assert [arg for op, arg in instructions() if op == "USER"][-1] == "amparo"
    docs = (ROOT / "README.md").read_text() + (ROOT / "compose.yaml").read_text()
    assert "chown 10001:10001 secrets/master.key" in " ".join(docs.split())
