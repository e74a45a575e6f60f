from __future__ import annotations

import json
import logging

import pytest

from detector import logs


def test_text_lines_escape_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "text")
    logs.event(logging.getLogger("detector.x"), "rejected", user="mallory\nFAKE LINE\x1b[31m")
    out = capsys.readouterr().err
    assert out.count("\n") == 1
    assert "mallory\\x0aFAKE LINE\\x1b[31m" in out


def test_json_lines_for_log_shippers(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "json")
    logs.event(logging.getLogger("detector.x"), "started", port=9464, user="a\nb")
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["message"] == "started" and record["port"] == 9464 and record["user"] == "a\nb"
    assert record["level"] == "info" and record["time"].endswith("Z")


def test_library_tracebacks_become_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "text")
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("kafka.net").warning("socket error", exc_info=True)
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and "Traceback" not in out and "ConnectionResetError: peer went away" in out
