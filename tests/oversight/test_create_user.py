import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from oversight.roles import is_manager, is_operator


@pytest.mark.django_db
def test_it_creates_an_operator_with_the_given_password(capsys):
    call_command("create_user", "alice", "--role", "operator", "--password", "a long passphrase")
    user = User.objects.get(username="alice")
    assert user.check_password("a long passphrase")
    assert is_operator(user) and not is_manager(user)
    assert "Created operator 'alice'" in capsys.readouterr().out


@pytest.mark.django_db
def test_it_generates_and_prints_a_password_when_none_is_given(capsys):
    call_command("create_user", "bob", "--role", "manager")
    out = capsys.readouterr().out
    password = out.strip().splitlines()[-1].split(": ", 1)[1]
    user = User.objects.get(username="bob")
    assert user.check_password(password)
    assert is_manager(User.objects.get(username="bob"))
    assert "Generated password" in out


@pytest.mark.django_db
def test_it_refuses_a_duplicate_and_a_weak_password():
    call_command("create_user", "carol", "--role", "operator", "--password", "a long passphrase")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "carol", "--role", "manager")
    with pytest.raises(CommandError, match="Password not accepted"):
        call_command("create_user", "dave", "--role", "manager", "--password", "123")
    assert not User.objects.filter(username="dave").exists()


def test_it_refuses_an_unknown_role():
    with pytest.raises(CommandError):
        call_command("create_user", "erin", "--role", "admin")


@pytest.mark.django_db
def test_the_roles_exist_after_migrating():
    from django.contrib.auth.models import Group

    assert set(Group.objects.values_list("name", flat=True)) >= {"operators", "managers"}
