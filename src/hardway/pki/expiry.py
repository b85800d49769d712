"""When a certificate stops (or has not started) being valid, judged against a window of days.
Pure: shared by `pki check` (DIR/pki) and `verify` (the certificates deployed on the hosts)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from cryptography import x509

from ..errors import UsageError
from ..spec.model import MAX_VALIDITY_DAYS

# 0 flags only what has expired; a century covers any validity hardway issues.
MAX_WINDOW_DAYS = MAX_VALIDITY_DAYS


class State(str, Enum):
    valid = "valid"
    expiring = "expiring"  # within the window
    expired = "expired"
    not_yet_valid = "not yet valid"


@dataclass(frozen=True)
class Expiry:
    state: State
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int  # whole days until not_after (negative once expired)

    @property
    def ok(self) -> bool:
        return self.state is State.valid

    def describe(self) -> str:
        """For a person: what is wrong (or right) and when."""
        end = f"{self.not_after:%Y-%m-%d %H:%M} UTC"
        if self.state is State.expired:
            return f"expired on {end}"
        if self.state is State.not_yet_valid:
            return f"not valid before {self.not_before:%Y-%m-%d %H:%M} UTC (is this host's or the issuer's clock wrong?)"
        if self.state is State.expiring:
            return f"expires in {self.days_left} day(s), on {end}"
        return f"valid until {end}"


def check_window(days: int, option: str) -> None:
    """Exit 2 naming `option` when the window is out of range."""
    if not 0 <= days <= MAX_WINDOW_DAYS:
        raise UsageError(f"{option} {days}: must be between 0 and {MAX_WINDOW_DAYS} (days)")


def judge(cert: x509.Certificate, now: dt.datetime, days: int) -> Expiry:
    """`days`: how soon an expiry counts (a certificate ending within it is `expiring`)."""
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = not_after - now
    if left <= dt.timedelta(0):
        state = State.expired
    elif not_before > now:
        state = State.not_yet_valid
    elif left <= dt.timedelta(days=days):
        state = State.expiring
    else:
        state = State.valid
    return Expiry(state, not_before, not_after, left.days)  # floored: -1 an hour after the end
