"""Imports every module that registers a network (one import line per network module)."""
