"""Tests of segpets' data."""
