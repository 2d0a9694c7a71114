"""Tests of lokr_core/keymap/."""
