"""Admin commands: app accounts, rate plans and the directory (``CMAAS_ADMINS`` only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from cmaas.admin import (
    AdminService,
    DirectoryRequest,
    InvalidInput,
    PlanRequest,
    RegisterAppRequest,
    RotateRequest,
    UpdateAppRequest,
)
from cmaas.admin.views import (
    SHOWN_ONCE,
    Row,
    app_rows,
    details_rows,
    directory_note,
    directory_rows,
    issued_rows,
    plan_rows,
)
from cmaas.component.adhoc.command import (
    Access,
    Command,
    CommandContext,
    Completed,
    FormStep,
    NextForm,
    Step,
)
from cmaas.component.adhoc.forms import (
    FieldSpec,
    FieldValue,
    FormSpec,
    Submission,
    render_result,
    render_table,
)
from cmaas.keystore import Plan
from cmaas.lifecycle import Priority

__all__ = [
    "AppList",
    "AppRegister",
    "AppRotate",
    "AppShow",
    "AppUpdate",
    "DirectorySet",
    "PlanSet",
    "admin_commands",
]

_APP_ID = FieldSpec(
    "app_id",
    "App id",
    "text-single",
    required=True,
    desc="Becomes the app's JID localpart: lowercase letters, digits, - _ .",
)
_CHOOSE_APP = FieldSpec("app_id", "App", "list-single", required=True)
_DISPLAY_NAME = FieldSpec(
    "display_name", "Display name", required=True, desc="Shown to recipients next to every message"
)
_PLAN = FieldSpec("plan", "Rate plan", "list-single", required=True)
_NETWORKS = FieldSpec(
    "networks",
    "Allowed IP addresses or CIDRs",
    "text-multi",
    desc="One address or CIDR per value, IPv4 or IPv6. The HTTP API refuses other"
    " addresses; leave empty for an XMPP-only app.",
)
_CALLBACK = FieldSpec(
    "callback_url",
    "Callback URL",
    desc="https:// URL that receives signed status webhooks; may be empty",
)
_JIDS = FieldSpec(
    "jids",
    "Bound XMPP accounts",
    "jid-multi",
    desc="Bare JIDs (bots) allowed to submit for this app over XMPP, one per value",
)


_NO_APP = "No app is registered yet: run 'Register an app' first."


def _plan_label(plan: Plan) -> str:
    return f"{plan.name} ({plan.sustained_per_second:g}/s, burst {plan.burst})"


class _AdminCommand(Command):
    access = Access.ADMIN

    def __init__(self, service: AdminService, component_domain: str) -> None:
        self.service = service
        self.component_domain = component_domain

    def result(self, title: str, rows: Sequence[Row], note: str) -> Completed:
        return Completed(notes=[("info", note)], payload=render_result(title, rows))

    async def choose_app(
        self,
        form: FormSpec,
        then: Callable[[CommandContext, Submission], Awaitable[Completed | NextForm]],
        values: Mapping[str, FieldValue] | None = None,
        *,
        final: bool = True,
    ) -> Step:
        """``form`` with every app as a choice, or a note when there is none to choose."""
        apps = await self.service.list_apps()
        if not apps:
            return Completed(notes=[("info", _NO_APP)])
        choices = [(app.app_id, f"{app.display_name} ({app.app_id})") for app in apps]
        return FormStep(form.with_options("app_id", choices), then, values or {}, final=final)

    async def with_plans(self, form: FormSpec) -> FormSpec:
        plans = await self.service.list_plans()
        return form.with_options("plan", [(p.name, _plan_label(p)) for p in plans])


class AppRegister(_AdminCommand):
    node = "urn:cmaas:cmd:app-register"
    name = "Register an app"
    form = FormSpec(
        "Register an app",
        "Create an app account. Its credentials are shown once, at the end.",
        (_APP_ID, _DISPLAY_NAME, _PLAN, _NETWORKS, _CALLBACK, _JIDS),
    )

    async def start(self, context: CommandContext) -> Step:
        return FormStep(await self.with_plans(self.form), self.submit, {"plan": "default"})

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        issued = await self.service.register_app(
            RegisterAppRequest(
                app_id=form.text("app_id").strip(),
                display_name=form.text("display_name"),
                plan=form.text("plan"),
                networks=form.texts("networks"),
                callback_url=form.text("callback_url"),
                jids=form.texts("jids"),
            )
        )
        return self.result(
            f"App {issued.app.app_id} registered",
            issued_rows(issued, self.component_domain),
            SHOWN_ONCE,
        )


class AppUpdate(_AdminCommand):
    node = "urn:cmaas:cmd:app-update"
    name = "Change an app"
    pick = FormSpec("Change an app", "Choose the app to change.", (_CHOOSE_APP,))
    edit = FormSpec(
        "Change an app",
        "Changes apply to the app's next request; no restart is needed.",
        (
            _DISPLAY_NAME,
            _PLAN,
            _NETWORKS,
            _CALLBACK,
            _JIDS,
            FieldSpec(
                "suspended",
                "Suspended",
                "boolean",
                desc="A suspended app's requests are refused with 403",
            ),
        ),
    )

    async def start(self, context: CommandContext) -> Step:
        return await self.choose_app(self.pick, self.picked, final=False)

    async def picked(self, context: CommandContext, form: Submission) -> NextForm:
        """Raises: InvalidInput: Unknown app."""
        details = await self.service.show_app(form.text("app_id"))
        return NextForm(self.editing, {"app_id": details.app.app_id})

    async def editing(self, context: CommandContext) -> Step:
        """The app's current values, to change."""
        app_id = str(context.state["app_id"])
        try:
            app = (await self.service.show_app(app_id)).app
        except InvalidInput as error:
            return Completed(notes=[("error", str(error))])
        current: dict[str, FieldValue] = {
            "display_name": app.display_name,
            "plan": app.plan,
            "networks": [str(n) for n in app.networks],
            "callback_url": app.callback_url or "",
            "jids": list(app.jids),
            "suspended": app.suspended,
        }
        return FormStep(await self.with_plans(self.edit), self.save, current)

    async def save(self, context: CommandContext, edited: Submission) -> Completed:
        updated = await self.service.update_app(
            UpdateAppRequest(
                app_id=str(context.state["app_id"]),
                display_name=edited.text("display_name"),
                plan=edited.text("plan"),
                networks=edited.texts("networks"),
                callback_url=edited.text("callback_url"),
                jids=edited.texts("jids"),
                suspended=edited.flag("suspended"),
            )
        )
        return self.result(
            f"App {updated.app_id} changed",
            app_rows(updated, self.component_domain),
            "Saved; in effect from the app's next request.",
        )


class AppRotate(_AdminCommand):
    node = "urn:cmaas:cmd:app-rotate"
    name = "Rotate an app's credentials"
    form = FormSpec(
        "Rotate credentials",
        "Issue a new client secret and HMAC key. The old ones keep working for the"
        " grace period, so the app can switch over without an outage.",
        (
            _CHOOSE_APP,
            FieldSpec(
                "grace_seconds",
                "Grace period (seconds)",
                required=True,
                desc="How long the old secret and key stay valid: 0 to 2592000 (30 days)",
            ),
        ),
    )

    async def start(self, context: CommandContext) -> Step:
        return await self.choose_app(self.form, self.submit, {"grace_seconds": "86400"})

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        issued = await self.service.rotate_app(
            RotateRequest(form.text("app_id"), form.text("grace_seconds")), int(context.now)
        )
        return self.result(
            f"Credentials of {issued.app.app_id} rotated",
            issued_rows(issued, self.component_domain),
            SHOWN_ONCE,
        )


class AppList(_AdminCommand):
    node = "urn:cmaas:cmd:app-list"
    name = "List apps"

    async def start(self, context: CommandContext) -> Step:
        apps = await self.service.list_apps()
        rows = [
            {
                "app_id": app.app_id,
                "display_name": app.display_name,
                "plan": app.plan,
                "status": "suspended" if app.suspended else "active",
                "networks": ", ".join(str(n) for n in app.networks),
                "jids": ", ".join(app.jids),
            }
            for app in apps
        ]
        table = render_table(
            "Apps",
            [
                ("app_id", "App id"),
                ("display_name", "Display name"),
                ("plan", "Plan"),
                ("status", "Status"),
                ("networks", "Allowed networks"),
                ("jids", "Bound JIDs"),
            ],
            rows,
        )
        return Completed(notes=[("info", f"{len(apps)} app(s)")], payload=table)


class AppShow(_AdminCommand):
    node = "urn:cmaas:cmd:app-show"
    name = "Show an app"
    form = FormSpec("Show an app", "Choose the app to show.", (_CHOOSE_APP,))

    async def start(self, context: CommandContext) -> Step:
        return await self.choose_app(self.form, self.submit)

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        details = await self.service.show_app(form.text("app_id"))
        return self.result(
            f"App {details.app.app_id}",
            details_rows(details, self.component_domain),
            "Counters are read live from the database.",
        )


class PlanSet(_AdminCommand):
    node = "urn:cmaas:cmd:plan-set"
    name = "Create or change a rate plan"
    form = FormSpec(
        "Rate plan",
        "Give an existing name to change that plan; apps on it follow from their next request.",
        (
            FieldSpec("name", "Plan name", required=True, desc="Lowercase letters, digits, - _ ."),
            FieldSpec(
                "sustained_per_second",
                "Sustained messages per second",
                required=True,
                desc="Long-run rate allowed, e.g. 10 or 0.5",
            ),
            FieldSpec(
                "burst",
                "Burst",
                required=True,
                desc="Messages allowed at once above the sustained rate",
            ),
            FieldSpec(
                "daily_quota",
                "Daily quota",
                desc="Messages per UTC day; empty or 0 for no daily cap",
            ),
            FieldSpec(
                "priorities",
                "Priorities allowed",
                "list-multi",
                required=True,
                options=(("high", "High (OTP)"), ("normal", "Normal"), ("bulk", "Bulk")),
            ),
        ),
    )

    async def start(self, context: CommandContext) -> Step:
        return FormStep(self.form, self.submit, {"priorities": list(Priority)})

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        plan = await self.service.set_plan(
            PlanRequest(
                name=form.text("name"),
                sustained_per_second=form.text("sustained_per_second"),
                burst=form.text("burst"),
                daily_quota=form.text("daily_quota"),
                priorities=form.texts("priorities"),
            )
        )
        return self.result(f"Plan {plan.name}", plan_rows(plan), "Saved; in effect now.")


class DirectorySet(_AdminCommand):
    node = "urn:cmaas:cmd:directory-set"
    name = "Bind an email or mobile number to a JID"
    form = FormSpec(
        "Directory",
        "Apps may address people by email or mobile number; this binds one to a JID.",
        (
            FieldSpec(
                "address",
                "Email or mobile number",
                required=True,
                desc="An email address, or a mobile number in international form"
                " such as +919876543210",
            ),
            FieldSpec(
                "jid",
                "JID",
                "jid-single",
                desc="The person's bare JID; leave empty to unbind the address",
            ),
        ),
    )

    async def start(self, context: CommandContext) -> Step:
        return FormStep(self.form, self.submit)

    async def submit(self, context: CommandContext, form: Submission) -> Completed:
        change = await self.service.set_directory(
            DirectoryRequest(address=form.text("address"), jid=form.text("jid"))
        )
        return self.result("Directory", directory_rows(change), directory_note(change))


def admin_commands(service: AdminService, component_domain: str) -> list[Command]:
    return [
        cls(service, component_domain)
        for cls in (AppRegister, AppUpdate, AppRotate, AppList, AppShow, PlanSet, DirectorySet)
    ]
