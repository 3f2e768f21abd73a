"""Django admin: agents and their keys, policies (edits make new versions), requests (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from oversight import actions, keys
from oversight.models import Agent, ApiKey, AuditEvent, OversightRequest, Policy
from oversight.policy_keys import check


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "label", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")

    def has_add_permission(self, request, obj=None):
        return False  # keys are made by the "Create a new API key" action: raw key shown once


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "hosts", "operations", "max_pending", "created_at", "active_keys", "last_host")
    search_fields = ("name", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = ("created_at", "last_host")
    inlines = [ApiKeyInline]
    actions = ["create_key", "revoke_keys"]

    @admin.display(description="active keys")
    def active_keys(self, obj):
        return obj.keys.filter(revoked_at__isnull=True).count()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            self._issue(request, obj)

    def _issue(self, request, agent):
        _, raw = keys.issue(agent, by=request.user.get_username(), label=f"admin:{request.user.get_username()}")
        self.message_user(
            request,
            format_html("New API key for <b>{}</b> — copy it now, it is shown only once: <code>{}</code>", agent.name, raw),
            level=messages.WARNING,
        )

    @admin.action(description="Create a new API key")
    def create_key(self, request, queryset):
        for agent in queryset:
            self._issue(request, agent)

    @admin.action(description="Revoke every key")
    def revoke_keys(self, request, queryset):
        count = keys.revoke(ApiKey.objects.filter(agent__in=queryset), by=request.user.get_username())
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "agent", "label", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    readonly_fields = ("agent", "digest", "prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("agent", "label", "prefix", "digest", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: a revocation is audited, a deleted key leaves no trace

    @admin.action(description="Revoke")
    def revoke(self, request, queryset):
        count = keys.revoke(queryset, by=request.user.get_username())
        self.message_user(request, f"Revoked {count} key(s).")


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        for field, why in check(cleaned).items():
            self.add_error(field if field in self.fields else None, why)
        return cleaned


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """Saving writes a new version through do_change_policy; old versions stay as they were."""

    form = PolicyForm
    list_display = ("operation", "version", "is_current", "memory_pressure", "delegation_depth", "circular_refs",
                    "always", "timeout_seconds", "min_timeout_seconds", "timeout_action", "required_approvals",
                    "created_by", "created_at")
    list_filter = ("is_current", "operation")
    fields = (*Policy.SETTING_FIELDS, "operation", "note")
    readonly_fields = ()

    def get_readonly_fields(self, request, obj=None):
        return ("operation",) if obj else ()

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("operation", "-version")

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or obj.is_current)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in Policy.SETTING_FIELDS if name in form.cleaned_data}
        new = actions.do_change_policy(
            obj.operation, changes, by=request.user.get_username(), note=form.cleaned_data.get("note", "")
        )
        obj.pk, obj.version = new.pk, new.version

    def save_related(self, request, form, formsets, change):
        pass


class AuditInline(admin.TabularInline):
    model = AuditEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "actor", "data")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The whole trail, read-only: the database refuses changes anyway (oversight/audit_triggers.py)."""

    list_display = ("at", "kind", "actor", "request", "policy")
    list_filter = ("kind",)
    search_fields = ("actor",)
    readonly_fields = ("at", "kind", "actor", "request", "policy", "data")
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(OversightRequest)
class OversightRequestAdmin(admin.ModelAdmin):
    """Read-only: decisions are made on the queue, where they are audited and broadcast."""

    list_display = ("id", "agent", "operation", "status", "critical", "decision_source", "created_at", "decided_at")
    list_filter = ("status", "decision_source", "critical")
    search_fields = ("summary", "operation", "agent__name")
    inlines = [AuditInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
