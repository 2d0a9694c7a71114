"""Tests of lokr_core/tuner/."""
