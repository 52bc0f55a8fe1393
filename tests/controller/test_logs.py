"""Controller logs are JSON and never carry codes, states or tokens."""

from __future__ import annotations

import json
import logging

from remotecli.controller.logs import JsonFormatter, scrub


def test_records_are_json_with_their_extra_fields() -> None:
    record = logging.LogRecord(
        "remotecli.x", logging.INFO, __file__, 1, "vm %s ready", ("vm_1",), None
    )
    record.request_id = "abc"
    out = json.loads(JsonFormatter().format(record))
    assert (out["event"], out["request_id"], out["level"]) == ("vm vm_1 ready", "abc", "info")


def test_secrets_are_cut_from_messages_and_fields() -> None:
    text = (
        "relayed http://127.0.0.1:1455/auth/callback?code=SECRET&state=S2 with "
        "Authorization: Bearer rcli_admin_TOKEN123 and rcli_user_abc-def"
    )
    clean = scrub(text)
    for secret in ("SECRET", "S2", "TOKEN123", "abc-def"):
        assert secret not in clean
    assert "http://127.0.0.1:1455/auth/callback?…" in clean
