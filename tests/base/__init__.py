"""Tests of lokr_core/base/."""
