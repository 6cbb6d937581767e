"""Policies and plans: pure decisions, no engine, no database, no clock."""
