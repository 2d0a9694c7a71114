"""Tests of lokr_core/ops/."""
