"""Database triggers that make the audit table append-only (see oversight/audit_triggers.py)."""

import django.db.models.deletion
from django.db import migrations, models


def install(apps, schema_editor):
    from oversight import audit_triggers

    audit_triggers.install(schema_editor.connection)


def remove(apps, schema_editor):
    from oversight import audit_triggers

    audit_triggers.remove(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('oversight', '0013_signed_receipts'),
    ]

    operations = [
        # Deleting a request or a policy would cascade into the audit: refuse it in Django
        # before the database does (both are already PROTECTed by their own references).
        migrations.AlterField(
            model_name='auditevent',
            name='policy',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='events', to='oversight.policy'),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='request',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='events', to='oversight.oversightrequest'),
        ),
        migrations.RunPython(install, remove),
    ]
