"""scripts/kafka.sh says plainly what is missing instead of failing obscurely."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kafka_broker import SCRIPT, free_port

TOOLS = ("bash", "dirname", "cat", "sed", "head", "tail", "grep", "wc", "mkdir", "rm", "sleep", "base64", "tr")


def run_without(tmp_path: Path, missing: str) -> subprocess.CompletedProcess[str]:
    """Run ``kafka.sh up`` with a PATH of basic tools (plus java, unless it is the one missing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (*TOOLS, "java", "mvn"):
        found = shutil.which(tool)
        if tool != missing and found:
            (bin_dir / tool).symlink_to(found)
    env = os.environ | {
        "PATH": str(bin_dir),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "KAFKA_HOME_DIR": str(tmp_path / "home"),
        "KAFKA_LIBS": str(tmp_path / "no-jars-yet"),
    }
    return subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_missing_java_is_named(tmp_path: Path) -> None:
    done = run_without(tmp_path, "java")
    assert done.returncode == 1
    assert "Java 17 or newer is needed" in done.stderr


def test_missing_maven_is_named_when_the_jars_are_not_cached(tmp_path: Path) -> None:
    if not shutil.which("java"):
        pytest.skip("the Java check comes first (covered above)")
    done = run_without(tmp_path, "mvn")
    assert done.returncode == 1
    assert "Maven is needed" in done.stderr
    assert not (tmp_path / "home").exists()  # nothing started, nothing half-made
