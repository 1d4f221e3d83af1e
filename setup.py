"""The compiled kernel of h5pool (``h5pool.hdf5._kernel``); the rest is in pyproject.toml.

It is built by ``pip install .`` (and ``-e .``) with the C compiler and the
Python headers, and links the system zlib, as h5py and numcodecs build theirs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "h5pool.hdf5._kernel",
            sources=["src/h5pool/hdf5/_kernel.c"],
            libraries=["z"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Werror=implicit"],
        )
    ]
)
