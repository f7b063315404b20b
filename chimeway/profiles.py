"""The recipient profile's fields and their rules (design §12), pure.

A profile holds how to reach a person: ``email``, ``phone`` (E.164), ``locale`` (a BCP 47
tag such as ``fr-CA``), ``timezone`` (an IANA zone) and free-form ``data`` (a JSON object,
e.g. a Slack channel or a webhook URL for adapters that read one). Addresses are personal
data: the messages here name the field and the rule broken, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chimeway.errors import ChimewayError
from chimeway.inputs import json_object

#: The fields a profile has besides its id, in the order they are documented.
FIELDS: Final = ("email", "phone", "locale", "timezone", "data")
#: Which field an adapter's ``address`` names.
ADDRESS_FIELDS: Final = frozenset({"email", "phone"})

MAX_EMAIL_CHARS: Final = 320  # RFC 3696: 64 for the local part, @, 255 for the domain
_EMAIL: Final = re.compile(r"[^\s@\x00-\x1f\x7f]{1,64}@[^\s@\x00-\x1f\x7f]{1,255}")
_PHONE: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_LOCALE: Final = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,6}")


def email_problem(value: object) -> str | None:
    """Why ``value`` is not an email address, or ``None``."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if len(value) > MAX_EMAIL_CHARS:
        return f"is longer than {MAX_EMAIL_CHARS} characters"
    if not _EMAIL.fullmatch(value) or value.startswith("@") or value.endswith("."):
        return "is not an email address (local-part@domain, without spaces)"
    return None


def phone_problem(value: object) -> str | None:
    """Why ``value`` is not an E.164 phone number, or ``None``."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not _PHONE.fullmatch(value):
        return "is not an E.164 phone number (+, then 7 to 15 digits, e.g. +14155550100)"
    return None


def locale_problem(value: object) -> str | None:
    """Why ``value`` is not a locale tag, or ``None``."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not _LOCALE.fullmatch(value):
        return "is not a locale tag such as 'en' or 'fr-CA'"
    return None


def timezone_problem(value: object) -> str | None:
    """Why ``value`` is not an IANA time zone name, or ``None``."""
    if not isinstance(value, str) or not value.strip():
        return "must be an IANA time zone name such as 'Europe/Paris'"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return "is not a known IANA time zone"
    return None


_PROBLEMS = {
    "email": email_problem,
    "phone": phone_problem,
    "locale": locale_problem,
    "timezone": timezone_problem,
}


def checked(
    error: type[ChimewayError],
    *,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    timezone: str | None = None,
    data: Mapping[str, Any] | None = None,
    where: str = "",
) -> dict[str, Any]:
    """The fields given (not ``None``), checked; ``error`` names the first one broken
    (prefixed with ``where``)."""
    fields: dict[str, Any] = {}
    for name, value in (
        ("email", email),
        ("phone", phone),
        ("locale", locale),
        ("timezone", timezone),
    ):
        if value is None:
            continue
        problem = _PROBLEMS[name](value)
        if problem is not None:
            raise error(f"{where}{name} {problem}")
        fields[name] = value
    if data is not None:
        fields["data"] = json_object(f"{where}data", data, error)
    return fields


def cleared(names: object, error: type[ChimewayError]) -> list[str]:
    """The profile fields named in ``names`` (an iterable of field names), checked."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise error(f"clear must be a list of field names from {', '.join(FIELDS)}")
    fields = list(dict.fromkeys(names))
    unknown = [n for n in fields if n not in FIELDS]
    if unknown:
        raise error(f"clear names unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    return fields
