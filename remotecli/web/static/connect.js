// Connect accounts (placeholder until the login panel lands).
