"""Fixtures shared by the twin model's tests."""

import pytest

from twins.models import Twin
from twins.tests.twin_api import served_schemas


@pytest.fixture
def served():
    return served_schemas()


@pytest.fixture
def plant(db) -> Twin:
    return Twin.objects.create(slug="plant", name="Plant")
