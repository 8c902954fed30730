"""Tests of the Alert aggregate."""
