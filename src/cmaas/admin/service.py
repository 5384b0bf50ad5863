"""The administration service: every operator action on app accounts, plans and the directory.

Protocol front ends (ad-hoc commands, the CLI) translate to and from these calls and
never decide anything themselves: validation, limits and the wording of refusals live
here, so every front end refuses the same things the same way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cmaas.admin.errors import InvalidInput
from cmaas.admin.requests import (
    DirectoryRequest,
    PlanRequest,
    RegisterAppRequest,
    RotateRequest,
    UpdateAppRequest,
)
from cmaas.delivery.destinations import PrivateDestination, check_public_url
from cmaas.identifiers import (
    InvalidIdentifier,
    IpNetwork,
    parse_address,
    parse_app_id,
    parse_bare_jid,
    parse_callback_url,
    parse_display_name,
    parse_network,
)
from cmaas.keystore import (
    App,
    AppAlreadyExists,
    AppChanges,
    AppCounters,
    AppNotFound,
    ClientIdTaken,
    IssuedCredentials,
    JidAlreadyBound,
    Keystore,
    NewApp,
    Plan,
    PlanNotFound,
    issue_credentials,
)
from cmaas.lifecycle import (
    Priority,
)

__all__ = [
    "MAX_GRACE_SECONDS",
    "MAX_JIDS",
    "MAX_NETWORKS",
    "AdminService",
    "AppDetails",
    "DirectoryChange",
    "IssuedApp",
]

MAX_NETWORKS = 64
MAX_JIDS = 32
MAX_GRACE_SECONDS = 30 * 86400
_MAX_RATE = 100_000.0
_MAX_BURST = 1_000_000
_MAX_DAILY_QUOTA = 1_000_000_000

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class IssuedApp:
    """An app with credentials that were just issued: show them once, then drop them."""

    app: App
    credentials: IssuedCredentials


@dataclass(frozen=True, slots=True)
class AppDetails:
    app: App
    plan: Plan
    counters: AppCounters


@dataclass(frozen=True, slots=True)
class DirectoryChange:
    address: str
    kind: str
    jid: str | None
    """The JID now bound, or ``None`` when the address was unbound."""
    existed: bool


class _Checker:
    """Collects field problems so an operator sees every mistake in one round trip."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def field(self, name: str, parse: Callable[[], T]) -> T | None:
        try:
            return parse()
        except InvalidIdentifier as exc:
            self.problems.setdefault(name, str(exc))
            return None

    def refuse(self, name: str, text: str) -> None:
        self.problems.setdefault(name, text)

    def raise_if_any(self) -> None:
        if self.problems:
            raise InvalidInput(self.problems)


class AdminService:
    """Operator actions on a :class:`~cmaas.keystore.Keystore`."""

    def __init__(self, keystore: Keystore, *, deny_private: bool = False) -> None:
        """Args:
        deny_private: Refuse a callback URL whose host is, or resolves to, a private
            address (``CMAAS_WEBHOOK_DENY_PRIVATE``).
        """
        self._keystore = keystore
        self._deny_private = deny_private

    async def _check_destination(self, callback_url: str | None) -> None:
        """Raises: InvalidInput: The URL points at a private address, when denied."""
        if callback_url is None or not self._deny_private:
            return
        try:
            await check_public_url(callback_url)
        except PrivateDestination as error:
            raise InvalidInput({"callback_url": str(error)}) from None

    async def register_app(self, request: RegisterAppRequest) -> IssuedApp:
        """Create an app account and issue its first credentials.

        Raises:
            InvalidInput: A field is malformed, the id is taken, the plan is unknown,
                or a JID is bound to another app. Nothing is stored.
        """
        check = _Checker()
        app_id = check.field("app_id", lambda: parse_app_id(request.app_id))
        display_name = check.field("display_name", lambda: parse_display_name(request.display_name))
        plan = request.plan.strip() or "default"
        networks = check.field("networks", lambda: _parse_networks(request.networks))
        callback_url = check.field(
            "callback_url", lambda: _optional(request.callback_url, parse_callback_url)
        )
        jids = check.field("jids", lambda: _parse_jids(request.jids))
        check.raise_if_any()
        await self._check_destination(callback_url)
        assert app_id is not None and display_name is not None
        new_app = NewApp(
            app_id=app_id,
            display_name=display_name,
            plan=plan,
            callback_url=callback_url,
            networks=networks or (),
            jids=jids or (),
        )
        for _attempt in range(3):
            credentials = issue_credentials(_new_client_id())
            try:
                app = await self._keystore.create_app(new_app, credentials)
            except ClientIdTaken:
                continue
            except AppAlreadyExists:
                raise InvalidInput({"app_id": f"an app named {app_id!r} already exists"}) from None
            except PlanNotFound:
                raise await self._unknown_plan(plan) from None
            except JidAlreadyBound as exc:
                raise InvalidInput({"jids": str(exc)}) from None
            return IssuedApp(app=app, credentials=credentials)
        raise RuntimeError("could not draw an unused client id")  # 2**-128 odds, thrice

    async def update_app(self, request: UpdateAppRequest) -> App:
        """Change an app; the change applies to the next request it makes.

        Raises:
            InvalidInput: Unknown app or plan, a malformed field, or a JID bound
                elsewhere. Nothing is changed.
        """
        check = _Checker()
        display_name = check.field(
            "display_name", lambda: _maybe(request.display_name, parse_display_name)
        )
        networks = check.field("networks", lambda: _maybe(request.networks, _parse_networks))
        callback_url = check.field(
            "callback_url",
            lambda: _maybe(request.callback_url, _optional_callback_url),
        )
        jids = check.field("jids", lambda: _maybe(request.jids, _parse_jids))
        check.raise_if_any()
        await self._check_destination(callback_url)
        plan = request.plan.strip() if request.plan is not None else None
        changes = AppChanges(
            display_name=display_name,
            plan=plan or None,
            callback_url=callback_url,
            clear_callback_url=request.callback_url is not None and callback_url is None,
            networks=networks,
            jids=jids,
            suspended=request.suspended,
        )
        try:
            return await self._keystore.update_app(request.app_id, changes)
        except AppNotFound:
            raise InvalidInput({"app_id": f"no app named {request.app_id!r}"}) from None
        except PlanNotFound:
            raise await self._unknown_plan(plan or "") from None
        except JidAlreadyBound as exc:
            raise InvalidInput({"jids": str(exc)}) from None

    async def rotate_app(self, request: RotateRequest, now: int) -> IssuedApp:
        """Issue a new client secret and HMAC key; the old ones end after the grace period.

        Raises:
            InvalidInput: Unknown app, or a grace period that is not 0 to 30 days.
        """
        grace = _parse_int(request.grace_seconds, "grace_seconds", 0, MAX_GRACE_SECONDS)
        try:
            app = await self._keystore.get_app(request.app_id)
            credentials = issue_credentials(app.client_id)
            app = await self._keystore.rotate_credentials(request.app_id, credentials, now + grace)
        except AppNotFound:
            raise InvalidInput({"app_id": f"no app named {request.app_id!r}"}) from None
        return IssuedApp(app=app, credentials=credentials)

    async def list_apps(self) -> Sequence[App]:
        return await self._keystore.list_apps()

    async def show_app(self, app_id: str) -> AppDetails:
        """Raises: InvalidInput: Unknown app."""
        try:
            app = await self._keystore.get_app(app_id)
            return AppDetails(
                app=app,
                plan=await self._keystore.get_plan(app.plan),
                counters=await self._keystore.app_counters(app_id),
            )
        except AppNotFound:
            raise InvalidInput({"app_id": f"no app named {app_id!r}"}) from None

    async def list_plans(self) -> Sequence[Plan]:
        return await self._keystore.list_plans()

    async def set_plan(self, request: PlanRequest) -> Plan:
        """Create or change a plan; apps on it follow from their next request.

        Raises:
            InvalidInput: A malformed name, rate, burst, quota or priority set.
        """
        check = _Checker()
        name = check.field("name", lambda: _parse_plan_name(request.name))
        rate = check.field(
            "sustained_per_second",
            lambda: _parse_float(request.sustained_per_second, 0.001, _MAX_RATE),
        )
        burst = check.field("burst", lambda: _parse_int_text(request.burst, 1, _MAX_BURST))
        quota_text = request.daily_quota.strip()
        quota = check.field(
            "daily_quota",
            lambda: (
                None
                if quota_text in ("", "0")
                else _parse_int_text(quota_text, 1, _MAX_DAILY_QUOTA)
            ),
        )
        priorities = check.field("priorities", lambda: _parse_priorities(request.priorities))
        check.raise_if_any()
        assert name is not None and rate is not None and burst is not None
        assert priorities is not None
        return await self._keystore.set_plan(
            Plan(
                name=name,
                sustained_per_second=rate,
                burst=burst,
                daily_quota=quota,
                priorities=priorities,
            )
        )

    async def set_directory(self, request: DirectoryRequest) -> DirectoryChange:
        """Bind an email or E.164 number to a JID, or unbind it when ``jid`` is empty.

        Raises:
            InvalidInput: A malformed address or JID.
        """
        check = _Checker()
        parsed = check.field("address", lambda: parse_address(request.address))
        jid = check.field("jid", lambda: _optional(request.jid, parse_bare_jid))
        check.raise_if_any()
        assert parsed is not None
        kind, address = parsed
        if jid is None:
            existed = await self._keystore.remove_directory(address)
            return DirectoryChange(address=address, kind=kind, jid=None, existed=existed)
        existed = await self._keystore.resolve_address(address) is not None
        await self._keystore.set_directory(address, kind, jid)
        return DirectoryChange(address=address, kind=kind, jid=jid, existed=existed)

    async def rewrap_hmac_keys(self) -> int:
        """Re-encrypt stored HMAC keys under the current master key.

        Raises:
            MasterKeyMismatch: A key is wrapped under a master key that is not configured.
        """
        return await self._keystore.rewrap_hmac_keys()

    async def _unknown_plan(self, plan: str) -> InvalidInput:
        names = ", ".join(p.name for p in await self._keystore.list_plans())
        return InvalidInput({"plan": f"no plan named {plan!r}; existing plans: {names}"})


def _new_client_id() -> str:
    return secrets.token_hex(16)


def _optional(value: str, parse: Callable[[str], T]) -> T | None:
    return None if not value.strip() else parse(value)


def _maybe(value: T | None, parse: Callable[[T], U]) -> U | None:
    return None if value is None else parse(value)


def _parse_plan_name(value: str) -> str:
    try:
        return parse_app_id(value.strip())
    except InvalidIdentifier:
        raise InvalidIdentifier(
            "plan name must be 1 to 64 lowercase letters, digits, '-', '_' or '.'"
        ) from None


def _optional_callback_url(value: str) -> str | None:
    return _optional(value, parse_callback_url)


def _clean_items(values: Sequence[str]) -> list[str]:
    """Split comma/newline separated entries, since forms and shells deliver both."""
    items: list[str] = []
    for value in values:
        items.extend(part.strip() for part in value.replace("\n", ",").split(","))
    return [item for item in items if item]


def _parse_networks(values: Sequence[str]) -> tuple[IpNetwork, ...]:
    items = _clean_items(values)
    if len(items) > MAX_NETWORKS:
        raise InvalidIdentifier(f"at most {MAX_NETWORKS} networks, got {len(items)}")
    return tuple(dict.fromkeys(parse_network(item) for item in items))


def _parse_jids(values: Sequence[str]) -> tuple[str, ...]:
    items = _clean_items(values)
    if len(items) > MAX_JIDS:
        raise InvalidIdentifier(f"at most {MAX_JIDS} JIDs, got {len(items)}")
    return tuple(dict.fromkeys(parse_bare_jid(item) for item in items))


def _parse_priorities(values: Sequence[str]) -> frozenset[Priority]:
    items = _clean_items(values)
    if not items:
        raise InvalidIdentifier(f"choose at least one priority: {Priority.choices()}")
    unknown = [item for item in items if item.lower() not in tuple(Priority)]
    if unknown:
        raise InvalidIdentifier(f"unknown priority {unknown[0]!r}; use {Priority.choices()}")
    return frozenset(Priority(item.lower()) for item in items)


def _parse_int_text(value: str, low: int, high: int) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise InvalidIdentifier(f"must be a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


def _parse_int(value: str, name: str, low: int, high: int) -> int:
    try:
        return _parse_int_text(value, low, high)
    except InvalidIdentifier as exc:
        raise InvalidInput({name: str(exc)}) from None


def _parse_float(value: str, low: float, high: float) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise InvalidIdentifier(f"must be a number, got {text[:20]!r}") from None
    if not low <= number <= high:  # also refuses NaN
        raise InvalidIdentifier(f"must be from {low} to {high:g}, got {text[:20]!r}")
    return number
