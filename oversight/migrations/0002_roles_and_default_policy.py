from django.db import migrations


def forwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ("operators", "managers"):
        Group.objects.get_or_create(name=name)
    Policy = apps.get_model("oversight", "Policy")
    if not Policy.objects.filter(operation="*").exists():
        # The default policy of the design: memory pressure > 80 %, delegation
        # depth > 4, circular references > 3; 5 minutes; approve on timeout.
        Policy.objects.create(
            operation="*", version=1, is_current=True, memory_pressure=80.0, delegation_depth=4,
            circular_refs=3, always=False, timeout_seconds=300, timeout_action="approve",
            escalate_after=0.5, created_by="system", note="Default policy.",
        )


class Migration(migrations.Migration):
    dependencies = [("oversight", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
