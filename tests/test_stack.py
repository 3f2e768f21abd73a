"""The suite's own live-server helper cleans up after itself."""

import pytest

from tests.conftest import start_stack


@pytest.mark.django_db(transaction=True)
def test_it_removes_the_stacks_folder_when_stopped():
    stack = start_stack(worker=False, beat=False)
    assert (stack.logs / "web.log").exists()
    stack.stop()
    assert not stack.logs.exists()
