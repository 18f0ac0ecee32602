"""Tests of segpets' reliability."""
