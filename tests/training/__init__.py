"""Tests of segpets' training."""
