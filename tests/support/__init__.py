"""What the test suites share: the controller's fixture ladder, /proc, polling (no tests here)."""
