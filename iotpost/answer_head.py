"""http.client's response, with a plain answer's header lines turned into its message here.

http.client reads an answer's status line and header lines itself, then hands the lines to the
``email`` package's parser to make an ``HTTPMessage``: about a third of a kept-alive burst's CPU
per payload goes there (profiled: 3.11, nginx, 1,000 payloads). The usual answer's lines are
``Name: value`` in printable ASCII, which that parser turns into ``(name, value)`` pairs and
nothing more; those are made here. Any other line (folded, 8-bit, a bare CR, no colon...), or a
multipart or message content type, goes to http.client's own ``parse_headers``, unchanged.

Everything else stays http.client's: ``AnswerResponse.begin`` is ``HTTPResponse.begin``'s own code
(status, framing, keep-alive), run with this module's ``parse_headers`` in the place of
http.client's, so no HTTP logic is copied here. Its globals are a copy of http.client's taken at
import: from them begin reads only constants, exception classes and ``_read_headers``, whose limits
(``_MAXLINE``, ``_MAXHEADERS``) stay read from http.client itself. tests/test_answer_head.py checks
the message this makes against the email parser's for thousands of seeded heads.
"""

from __future__ import annotations

import http.client
import io

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import List

# The bytes a plain header line holds besides its line end: tab and printable ASCII. Deleting them
# leaves the line end alone; anything else left (a bare CR, 8-bit, controls) is not plain.
_PLAIN_BYTES = b"\t" + bytes(range(0x20, 0x7F))
_STOCK_PARSE = http.client.parse_headers


def plain_message(lines: List[bytes], message_class=http.client.HTTPMessage):
    """The message http.client's parse_headers makes of ``lines`` (as its ``_read_headers`` returns
    them: each header line, then the blank one), or None when the email parser must read them: a
    line that is not plain, a multipart or message content type, a head cut at EOF."""
    if not lines or lines[-1] not in (b"\r\n", b"\n"):
        return None  # the head ended at EOF: left to the email parser
    fields = []
    for line in lines[:-1]:
        end = line.translate(None, _PLAIN_BYTES)
        colon = line.find(b":")
        if (end != b"\r\n" and end != b"\n") or not line.endswith(end) or colon < 1:
            return None
        name = line[:colon]
        if b" " in name or b"\t" in name:  # the email parser's names: printable ASCII but space and ":"
            return None
        # It drops the value's leading blanks and its line end, and keeps the rest, trailing blanks too.
        value = line[colon + 1:-len(end)].lstrip(b" \t")
        if name.lower() == b"content-type" and (b"multipart" in value.lower() or b"message" in value.lower()):
            return None  # a multipart or message content type: the email parser looks into the body
        fields.append((name.decode("ascii"), value.decode("ascii")))
    message = message_class()
    for name, value in fields:
        message.set_raw(name, value)
    message.set_payload("")  # what the email parser leaves for a head without a body
    return message


def parse_headers(fp, _class=http.client.HTTPMessage):
    """http.client.parse_headers, with plain lines made into the message here."""
    lines = http.client._read_headers(fp)  # its limits (line length, number of lines) and errors
    message = plain_message(lines, _class)
    if message is None:
        message = _STOCK_PARSE(io.BytesIO(b"".join(lines)), _class)
    return message


def _begin():
    """HTTPResponse.begin's code with this module's parse_headers; None where it cannot be (then the
    stock begin serves, parsing as always)."""
    stock = http.client.HTTPResponse.begin
    code = getattr(stock, "__code__", None)
    if code is None or code.co_freevars or "parse_headers" not in code.co_names:
        return None
    names = dict(vars(http.client))
    names["parse_headers"] = parse_headers
    return type(_begin)(code, names, stock.__name__, stock.__defaults__)


class AnswerResponse(http.client.HTTPResponse):
    """http.client's response class, for a connection's ``response_class``."""


_QUICK_BEGIN = _begin()
if _QUICK_BEGIN is not None:
    AnswerResponse.begin = _QUICK_BEGIN  # type: ignore[method-assign]
