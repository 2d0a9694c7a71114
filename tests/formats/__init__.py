"""Tests of lokr_core/formats/."""
