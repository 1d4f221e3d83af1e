"""What the tests share: corpora that encode their file and row, the real writers'
files, and the scripts that tests run in fresh processes (``*_check.py``).

``tests/`` is on ``sys.path`` through pytest's ``pythonpath`` setting, so tests
import ``helpers.corpus`` and so on; a script run in a subprocess gets
``TESTS_DIR`` on its ``PYTHONPATH`` from the test that starts it.
"""
