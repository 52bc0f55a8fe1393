"""Developer tools that are not part of the product (not installed, not run by the tests)."""
