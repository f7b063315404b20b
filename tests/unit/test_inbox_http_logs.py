"""The filter ``chimeway serve`` puts on uvicorn's access log: no stream token in a log line."""

from __future__ import annotations

import logging

from chimeway.http.inbox import RedactAccessTokens


def test_access_tokens_in_query_strings_are_hidden_in_access_log_lines() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/inbox/stream?access_token=v1.abc.def&x=1", "1.1", 200),
        None,
    )
    assert RedactAccessTokens().filter(record) is True
    assert record.getMessage() == (
        '127.0.0.1:5000 - "GET /v1/inbox/stream?access_token=***&x=1 HTTP/1.1" 200'
    )


def test_other_lines_are_left_as_they_are() -> None:
    args = ("127.0.0.1:5000", "GET", "/v1/inbox/counts", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", args, None)
    assert RedactAccessTokens().filter(record) is True
    assert record.args == args
