"""The container image and compose file a newcomer starts from: pinned, healthy when
/healthz answers, state in a volume, port 3000 published as the README says, no secrets
in the build context, and a LICENSE that says what pyproject.toml says."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions with line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", "", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_is_pinned_healthy_and_keeps_its_state_in_a_volume():
    steps = _instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    bases = [rest.split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
             for word, rest in steps if word == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.\d+-slim-bookworm", b) for b in bases), bases
    [volume] = [json.loads(rest) for word, rest in steps if word == "VOLUME"]
    env = " ".join(rest for word, rest in steps if word == "ENV")
    store = re.search(r"THREADTEAM_STORE=sqlite:///(\S+)", env)
    assert store is not None and Path(store.group(1)).parent == Path(volume[0])
    [health] = [rest for word, rest in steps if word == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")  # the probe is valid Python once unescaped
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_compose_publishes_port_3000_and_checks_the_bot():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bot = compose["services"]["bot"]
    assert bot["ports"] == ["3000:3000"]
    assert "/healthz" in " ".join(bot["healthcheck"]["test"])
    redis_image = compose["services"]["redis"]["image"]
    assert re.fullmatch(r"redis:\d+\.\d+-alpine", redis_image), redis_image


def test_secrets_and_caches_stay_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", ".git", "**/__pycache__", ".pytest_cache", ".mypy_cache"} <= ignored


def test_the_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in license_text
