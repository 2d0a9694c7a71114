"""Tests of lokr_core/commands/."""
