"""The reliability summary counts marked cases by kind."""
import pytest


@pytest.mark.reliability("clear_error")
def test_marked_case_is_counted():
    with pytest.raises(ValueError, match="expected"):
        raise ValueError("bad value 'x'; expected a number")
