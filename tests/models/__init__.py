"""Tests of segpets' models."""
