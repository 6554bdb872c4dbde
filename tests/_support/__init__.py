"""Test support shared by several test modules (real servers started on loopback)."""
