"""Budgets in the admin: an inline on a client key's page and on an instance's page, each row
with the spend of its current period (from the request log) and when it resets."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from instances.budgets import invalidate_budgets, spent_now, state_of, usage_text
from instances.models import Budget


def spent_text(row: Budget) -> str:
    found = spent_now(row) if row.pk else None
    if found is None:
        return "–"
    ref, spent, reset = found
    state = {"exceeded": _("exceeded"), "warning": _("warning"), "ok": _("ok")}[
        state_of(ref, spent)]
    return _("%(usage)s (%(share).0f%%, %(state)s); resets %(reset)s") % {
        "usage": usage_text(ref, spent), "share": spent.share(ref) * 100, "state": state,
        "reset": timezone.localtime(reset).strftime("%Y-%m-%d %H:%M %Z")}


class _BudgetInline(admin.TabularInline):
    model = Budget
    fields = ("period", "spend_limit", "currency", "token_limit", "warn_percent", "enabled",
              "spent")
    readonly_fields = ("spent",)
    extra = 0

    @admin.display(description=gettext_lazy("spent this period"))
    def spent(self, obj: Budget) -> str:
        return spent_text(obj)

    def get_formset(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        save = formset.save

        def saved(this: Any, *args: Any, **kw: Any) -> Any:
            result = save(this, *args, **kw)
            invalidate_budgets(request)  # this process at once, the others within seconds
            return result

        formset.save = saved
        return formset


class KeyBudgetInline(_BudgetInline):
    fk_name = "key"
    verbose_name_plural = gettext_lazy("budgets of this key")


class InstanceBudgetInline(_BudgetInline):
    fk_name = "instance"
    verbose_name_plural = gettext_lazy("budgets of the whole instance")
