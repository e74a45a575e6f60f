from __future__ import annotations

import base64
import uuid

import pytest

from detector import localkafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # One random id in 64 would: kafka-storage's argument parser then takes it for an option, and the
    # local broker (make kafka-up, every broker test) fails to format its storage.
    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=b"\x01" * 16)
    assert base64.urlsafe_b64encode(dash.bytes).decode().startswith("-")
    drawn = iter([dash, plain])
    monkeypatch.setattr(localkafka.uuid, "uuid4", lambda: next(drawn))
    assert localkafka.new_cluster_id() == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")


def test_cluster_ids_are_kafkas_shape() -> None:
    for _ in range(2000):
        cluster_id = localkafka.new_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert uuid.UUID(bytes=base64.urlsafe_b64decode(cluster_id + "=="))
