"""Tests of lokr_core/tensor/."""
