"""Test suite of slide2vec-dagster.

A package so that tests can share helpers: ``from tests.contract import check_output_dir``.
"""
