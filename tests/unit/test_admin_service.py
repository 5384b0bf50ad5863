"""The administration service: validation, refusals that change nothing, and results."""

from __future__ import annotations

import pytest

from cmaas.admin import (
    AdminService,
    DirectoryRequest,
    InvalidInput,
    PlanRequest,
    RegisterAppRequest,
    RotateRequest,
    UpdateAppRequest,
)
from cmaas.keystore import (
    SqliteKeystore,
)
from cmaas.lifecycle import (
    Priority,
)


def register(app_id: str = "parichay-otp", **kwargs: object) -> RegisterAppRequest:
    fields: dict[str, object] = {"display_name": "Parichay OTP"}
    fields.update(kwargs)
    return RegisterAppRequest(app_id=app_id, **fields)  # type: ignore[arg-type]


async def test_register_issues_credentials_that_authenticate(
    service: AdminService, keystore: SqliteKeystore
) -> None:
    issued = await service.register_app(
        register(
            networks=["203.0.113.0/24\n2001:db8::/32", "198.51.100.7"],
            jids=["Bot@CMaaS.test"],
            callback_url="https://app.example.org/cb",
        )
    )
    assert sorted(str(n) for n in issued.app.networks) == [
        "198.51.100.7/32",
        "2001:db8::/32",
        "203.0.113.0/24",
    ]
    assert issued.app.jids == ("bot@cmaas.test",)
    assert len(issued.credentials.client_secret) >= 43
    assert len(issued.credentials.hmac_key) == 32
    auth = await keystore.authenticate(
        issued.credentials.client_id, issued.credentials.client_secret
    )
    assert auth.hmac_key == issued.credentials.hmac_key


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (register("Bad Id"), "app_id"),
        (register("x" * 65), "app_id"),
        (register(display_name=""), "display_name"),
        (register(display_name="x" * 101), "display_name"),
        (register(display_name="a\x00b"), "display_name"),
        (register(networks=["10.0.0.0/33"]), "networks"),
        (register(networks=["10.1.2.3/8"]), "networks"),
        (register(networks=["not-an-ip"]), "networks"),
        (register(networks=[f"10.0.{i}.0/24" for i in range(65)]), "networks"),
        (register(callback_url="ftp://x.example/"), "callback_url"),
        (register(callback_url="https://user:pw@x.example/"), "callback_url"),
        (register(callback_url="https://x.example/" + "a" * 2100), "callback_url"),
        (register(jids=["not a jid@@"]), "jids"),
        (register(jids=["bot@cmaas.test/phone"]), "jids"),
        (register(plan="gold"), "plan"),
    ],
)
async def test_register_refusals_change_nothing(
    service: AdminService, request_: RegisterAppRequest, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.register_app(request_)
    assert field in caught.value.problems
    assert caught.value.problems[field]
    assert await service.list_apps() == []


async def test_every_problem_is_reported_at_once(service: AdminService) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.register_app(register("Bad Id", display_name="", networks=["x"]))
    assert set(caught.value.problems) == {"app_id", "display_name", "networks"}


async def test_duplicate_app_id(service: AdminService) -> None:
    await service.register_app(register())
    with pytest.raises(InvalidInput) as caught:
        await service.register_app(register(display_name="Another"))
    assert "already exists" in caught.value.problems["app_id"]
    assert [a.display_name for a in await service.list_apps()] == ["Parichay OTP"]


async def test_unknown_plan_names_the_existing_ones(service: AdminService) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.register_app(register(plan="gold"))
    assert "existing plans: default" in caught.value.problems["plan"]


async def test_update_replaces_and_keeps(service: AdminService) -> None:
    await service.register_app(register(networks=["203.0.113.0/24"]))
    await service.set_plan(PlanRequest("gold", "50", "100", "", ["high"]))
    app = await service.update_app(
        UpdateAppRequest("parichay-otp", plan="gold", networks=["192.0.2.0/24"], suspended=True)
    )
    assert (app.plan, [str(n) for n in app.networks], app.suspended) == (
        "gold",
        ["192.0.2.0/24"],
        True,
    )
    assert app.display_name == "Parichay OTP"
    app = await service.update_app(
        UpdateAppRequest("parichay-otp", callback_url="https://x.example/")
    )
    assert app.callback_url == "https://x.example/"
    app = await service.update_app(UpdateAppRequest("parichay-otp", callback_url=""))
    assert app.callback_url is None


async def test_update_refusals(service: AdminService) -> None:
    await service.register_app(register(networks=["203.0.113.0/24"]))
    for request_, field in [
        (UpdateAppRequest("nope", plan="default"), "app_id"),
        (UpdateAppRequest("parichay-otp", plan="gold"), "plan"),
        (UpdateAppRequest("parichay-otp", networks=["300.1.1.1"]), "networks"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            await service.update_app(request_)
        assert field in caught.value.problems
    app = (await service.list_apps())[0]
    assert ([str(n) for n in app.networks], app.plan) == (["203.0.113.0/24"], "default")


async def test_jid_bound_to_another_app(service: AdminService) -> None:
    await service.register_app(register(jids=["bot@cmaas.test"]))
    with pytest.raises(InvalidInput) as caught:
        await service.register_app(register("other", jids=["bot@cmaas.test"]))
    assert "already bound" in caught.value.problems["jids"]


async def test_rotate(service: AdminService, keystore: SqliteKeystore) -> None:
    first = await service.register_app(register())
    second = await service.rotate_app(RotateRequest("parichay-otp", "0"), now=0)
    assert second.credentials.client_id == first.credentials.client_id
    assert second.credentials.client_secret != first.credentials.client_secret
    with pytest.raises(InvalidInput) as caught:
        await service.rotate_app(RotateRequest("parichay-otp", "-1"), now=0)
    assert "grace_seconds" in caught.value.problems
    with pytest.raises(InvalidInput):
        await service.rotate_app(RotateRequest("parichay-otp", str(31 * 86400)), now=0)
    with pytest.raises(InvalidInput):
        await service.rotate_app(RotateRequest("nope"), now=0)


async def test_plan_set(service: AdminService) -> None:
    plan = await service.set_plan(PlanRequest("gold", "12.5", "40", "0", ["high", "Normal"]))
    assert (plan.sustained_per_second, plan.burst, plan.daily_quota) == (12.5, 40, None)
    assert plan.priorities == frozenset({Priority.HIGH, Priority.NORMAL})
    plan = await service.set_plan(PlanRequest("gold", "1", "1", "500", ["bulk"]))
    assert [p.name for p in await service.list_plans()] == ["default", "gold"]
    assert (await service.list_plans())[1].daily_quota == 500


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (PlanRequest("Gold!", "1", "1"), "name"),
        (PlanRequest("gold", "0", "1"), "sustained_per_second"),
        (PlanRequest("gold", "nan", "1"), "sustained_per_second"),
        (PlanRequest("gold", "fast", "1"), "sustained_per_second"),
        (PlanRequest("gold", "1", "0"), "burst"),
        (PlanRequest("gold", "1", "1.5"), "burst"),
        (PlanRequest("gold", "1", "1", "-3"), "daily_quota"),
        (PlanRequest("gold", "1", "1", "", []), "priorities"),
        (PlanRequest("gold", "1", "1", "", ["urgent"]), "priorities"),
    ],
)
async def test_plan_refusals(service: AdminService, request_: PlanRequest, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.set_plan(request_)
    assert field in caught.value.problems
    assert [p.name for p in await service.list_plans()] == ["default"]


async def test_directory(service: AdminService, keystore: SqliteKeystore) -> None:
    change = await service.set_directory(
        DirectoryRequest(" Alice@Example.ORG ", "alice@cmaas.test")
    )
    assert (change.address, change.kind, change.existed) == ("alice@example.org", "email", False)
    change = await service.set_directory(DirectoryRequest("+91 98765 43210", "bob@cmaas.test"))
    assert (change.address, change.kind) == ("+919876543210", "mobile")
    assert await keystore.resolve_address("+919876543210") == "bob@cmaas.test"
    change = await service.set_directory(DirectoryRequest("+919876543210", ""))
    assert change.jid is None and change.existed
    assert await keystore.resolve_address("+919876543210") is None


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (DirectoryRequest("alice@", "alice@cmaas.test"), "address"),
        (DirectoryRequest("alice", "alice@cmaas.test"), "address"),
        (DirectoryRequest("9876543210", "alice@cmaas.test"), "address"),
        (DirectoryRequest("+1 555 0100", "alice@cmaas.test"), "address"),
        (DirectoryRequest("+91abc", "alice@cmaas.test"), "address"),
        (DirectoryRequest("alice@example.org", "cmaas.test"), "jid"),
    ],
)
async def test_directory_refusals(
    service: AdminService, keystore: SqliteKeystore, request_: DirectoryRequest, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.set_directory(request_)
    assert field in caught.value.problems
    assert await keystore.resolve_address("alice@example.org") is None
