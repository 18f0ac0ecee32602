"""Tests of segpets' apps."""
