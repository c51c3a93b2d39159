"""Shared helpers and pytest plugins of our tests (imported as tests.support.<name>, or loaded with -p): no test
module imports another test module."""
