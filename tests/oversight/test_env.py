import pytest

from oversight.env import ConfigError, env_bool, env_float, env_int, env_list, env_str, env_url


def test_it_uses_the_default_when_unset_or_blank():
    assert env_int("PORT", 8000, environ={}) == 8000
    assert env_int("PORT", 8000, environ={"PORT": "  "}) == 8000
    assert env_str("X", "d", environ={}) == "d"
    assert env_list("ALLOWED_HOSTS", ["a"], environ={}) == ["a"]


def test_it_reads_typed_values():
    assert env_int("PORT", 1, environ={"PORT": "9000"}) == 9000
    assert env_bool("DEBUG", False, environ={"DEBUG": "yes"}) is True
    assert env_bool("DEBUG", True, environ={"DEBUG": "off"}) is False
    assert env_float("F", 1.0, environ={"F": "2.5"}) == 2.5
    assert env_list("H", [], environ={"H": "a.example, b.example,,"}) == ["a.example", "b.example"]
    assert env_url("R", None, schemes=("redis",), environ={"R": "redis://h:1/0"}) == "redis://h:1/0"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: env_int("PORT", 1, environ={"PORT": "80a"}), "PORT='80a' is not a whole number"),
        (lambda: env_int("PORT", 1, minimum=1, environ={"PORT": "0"}), "PORT=0 is below the minimum"),
        (lambda: env_int("PORT", 1, maximum=65535, environ={"PORT": "70000"}), "above the maximum"),
        (lambda: env_bool("DEBUG", False, environ={"DEBUG": "maybe"}), "DEBUG='maybe' is not a boolean"),
        (lambda: env_float("F", 1.0, environ={"F": "nan"}), "not a finite number"),
        (lambda: env_float("F", 1.0, environ={"F": "x"}), "F='x' is not a number"),
        (lambda: env_url("REDIS_URL", None, schemes=("redis",), environ={"REDIS_URL": "localhost:6379"}), "REDIS_URL"),
        (lambda: env_url("DATABASE_URL", None, schemes=("postgres",), environ={"DATABASE_URL": "mysql://x/y"}), "postgres://"),
    ],
)
def test_it_fails_loudly_naming_the_variable(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_it_refuses_to_start_with_a_bad_value(tmp_path):
    """A bad value stops the process at start-up with the variable's name."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PORT="eighty", OVERSIGHT_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "PORT='eighty' is not a whole number" in result.stderr


def test_it_requires_a_secret_key_in_production(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env |= {"OVERSIGHT_PRODUCTION": "1", "OVERSIGHT_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
    assert not (tmp_path / "secret_key").exists()
