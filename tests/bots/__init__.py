"""Tests of the bots package."""
