"""Dashboard and API accounts, their sessions, login throttling and the audit trail."""
