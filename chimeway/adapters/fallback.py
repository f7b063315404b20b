"""Provider failover inside one channel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from chimeway.adapters.settings import check_capacity, check_name, check_timeout
from chimeway.adapters.types import DeliveryFailure, DeliveryRequest, Sent, Temporary
from chimeway.errors import ConfigurationError
from chimeway.redaction import clean_text
from chimeway.types import ErrorClass

logger = logging.getLogger(__name__)

#: Answers after which another provider would not do better.
FINAL = frozenset({ErrorClass.PERMANENT, ErrorClass.BOUNCED})


class FallbackAdapter:
    """Tries its providers in order within one call, moving on after a temporary failure.

    A :class:`Temporary` answer (a timeout, a rate limit, a 5xx), an unclassified failure or
    an exception that is not a :class:`DeliveryFailure` moves on to the next provider; a
    :class:`Permanent` or :class:`Bounced` answer stops there, since another provider would
    not do better. Every failed try is listed, in order, in ``meta["failover"]`` as
    ``{"provider", "error_class", "error"}``; ``meta["provider"]`` names the provider that
    answered last:

    * accepted: :class:`Sent` with the accepting provider's meta plus those two keys;
    * refused: that provider's failure, its meta completed the same way;
    * every provider failed temporarily: :class:`Temporary` with ``meta["provider"]`` set
      to this adapter's name and the smallest ``retry_after`` any of them gave.

    A timeout is ambiguous (the first provider may have sent it after all), so failover can
    deliver twice; every provider gets the same idempotency key.

    ``timeout`` defaults to the sum of the providers' and ``capacity`` to the smallest of
    theirs; a provider without those attributes needs them given here. ``address`` (the
    profile field the channel needs) is the providers' when they all need the same one.
    """

    def __init__(
        self,
        providers: Sequence[Any],
        *,
        name: str = "fallback",
        timeout: float | None = None,
        capacity: int | None = None,
    ) -> None:
        self.name = check_name("FallbackAdapter", name)
        self.providers = list(providers)
        if not self.providers:
            raise ConfigurationError("FallbackAdapter needs at least one provider")
        for index, provider in enumerate(self.providers):
            if not callable(getattr(provider, "deliver", None)):
                raise ConfigurationError(
                    f"FallbackAdapter provider {index} has no deliver(request) method"
                )
        self.timeout = check_timeout(
            "FallbackAdapter",
            sum(self._each("timeout")) if timeout is None else timeout,
        )
        self.capacity = check_capacity(
            "FallbackAdapter",
            min(self._each("capacity")) if capacity is None else capacity,
        )
        needed = {getattr(provider, "address", None) for provider in self.providers}
        self.address: str | None = needed.pop() if len(needed) == 1 else None

    def deliver(self, request: DeliveryRequest) -> Sent:
        tried: list[dict[str, Any]] = []
        retry_afters: list[float] = []
        for index, provider in enumerate(self.providers):
            name = provider_name(provider)
            try:
                result: object = provider.deliver(request)
            except Exception as exc:  # a DeliveryFailure, or a provider's bug
                result = exc
            if isinstance(result, Sent):
                return Sent(
                    provider_message_id=result.provider_message_id,
                    meta={**result.meta, "provider": name, "failover": tried},
                )
            if isinstance(result, DeliveryFailure):
                if result.error_class in FINAL:
                    result.meta = {**result.meta, "provider": name, "failover": tried}
                    raise result
                tried.append(_tried(name, result.error_class, str(result)))
                if result.retry_after is not None:
                    retry_afters.append(result.retry_after)
            elif isinstance(result, Exception):
                tried.append(_tried(name, ErrorClass.UNKNOWN, f"{type(result).__name__}: {result}"))
            else:
                tried.append(_tried(name, ErrorClass.UNKNOWN, f"returned {type(result).__name__}"))
            if index + 1 < len(self.providers):
                self._log_failover(request, name)
        raise Temporary(
            f"{self.name}: every provider failed temporarily "
            f"({', '.join(t['provider'] for t in tried)})",
            meta={"provider": self.name, "failover": tried},
            retry_after=min(retry_afters) if retry_afters else None,
        )

    def _each(self, attribute: str) -> list[Any]:
        values = []
        for provider in self.providers:
            value = getattr(provider, attribute, None)
            if value is None:
                raise ConfigurationError(
                    f"FallbackAdapter provider {provider_name(provider)!r} has no {attribute}; "
                    f"give FallbackAdapter a {attribute}"
                )
            values.append(value)
        return values

    def _log_failover(self, request: DeliveryRequest, name: str) -> None:
        logger.info(
            "provider failed temporarily; trying the next one",
            extra={
                "action": "adapter.failover",
                "adapter": self.name,
                "provider": name,
                "delivery_id": str(request.delivery_id),
            },
        )


def provider_name(adapter: object) -> str:
    """An adapter's ``name``, or its class name when it has none."""
    name = getattr(adapter, "name", None)
    return name if isinstance(name, str) and name else type(adapter).__name__


def _tried(name: str, error_class: ErrorClass, error: str) -> dict[str, Any]:
    return {"provider": name, "error_class": str(error_class), "error": clean_text(error)[:500]}
