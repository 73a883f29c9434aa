"""Account admin actions that call the upstream ("Test account", "Sync models"). They live
here because only proxy may speak to upstreams; they join the AccountAdmin's own actions."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.admin import AccountAdmin
from proxy.sync import probe_accounts, sync_models


def _selected(queryset: Any) -> list[int]:
    return list(queryset.order_by("pk").values_list("pk", flat=True))


@admin.action(description=gettext_lazy("Test account (a 1-token chat completion)"))
def test_account(modeladmin: AccountAdmin, request: Any, queryset: Any) -> None:
    # async_to_sync: runs on the server's event loop; the database work stays on this thread.
    for result in async_to_sync(probe_accounts)(_selected(queryset)):
        modeladmin.message_user(request, result.summary(),
                                messages.SUCCESS if result.ok else messages.ERROR)


@admin.action(description=gettext_lazy("Sync models from the upstream (OpenAI-compatible "
                                       "accounts)"))
def sync_account_models(modeladmin: AccountAdmin, request: Any, queryset: Any) -> None:
    report = async_to_sync(sync_models)(_selected(queryset))
    for line in report.skipped:
        modeladmin.message_user(request, _("Skipped %(what)s.") % {"what": line},
                                messages.WARNING)
    for item in report.accounts:
        modeladmin.message_user(request, item.summary(),
                                messages.SUCCESS if item.ok else messages.ERROR)
    if report.accounts:
        modeladmin.message_user(request, report.summary(), messages.INFO)


AccountAdmin.actions = [*AccountAdmin.actions, test_account, sync_account_models]


from proxy import admin_requestlog  # noqa: E402, F401  (the request log admin)
